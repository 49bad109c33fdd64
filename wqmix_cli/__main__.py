from wqmix_cli.cli import entry

entry()
