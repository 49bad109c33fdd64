"""Episode replay: compact storage, padding masks, uniform sampling, ring overwrite."""
import torch
from conftest import SMALL_INFO, random_batch

from wqmix_cli.buffer import EpisodeBuffer


def test_add_and_sample_shapes_cut_to_longest_sampled_episode():
    buf = EpisodeBuffer(SMALL_INFO, capacity=8)
    buf.add(random_batch(SMALL_INFO, [3, 2, 3]), torch.tensor([3, 2, 3]))
    assert buf.size == 3 and buf.can_sample(3) and not buf.can_sample(4)
    batch = buf.sample(16)
    n, a = SMALL_INFO.n_agents, SMALL_INFO.n_actions
    assert batch.obs.shape == (16, 4, n, SMALL_INFO.obs_dim)
    assert batch.state.shape == (16, 4, SMALL_INFO.state_dim)
    assert batch.avail.shape == (16, 4, n, a) and batch.avail.dtype == torch.bool
    assert batch.actions.shape == (16, 3, n) and batch.actions.dtype == torch.long
    assert batch.reward.shape == batch.filled.shape == batch.terminated.shape == (16, 3)
    assert torch.equal(batch.filled.sum(1).sort().values.unique(), torch.tensor([2, 3]))


def test_stored_values_round_trip_and_padding_is_masked():
    buf = EpisodeBuffer(SMALL_INFO, capacity=4)
    episodes = random_batch(SMALL_INFO, [4, 1])
    buf.add(episodes, torch.tensor([4, 1]))
    assert torch.equal(buf.storage.obs[:2, :5], episodes.obs)
    assert torch.equal(buf.storage.actions[:2, :4].long(), episodes.actions)
    assert buf.storage.actions.dtype == torch.uint8
    assert torch.equal(buf.storage.filled[1], torch.tensor([True] + [False] * 9))
    assert not buf.storage.filled[:, 4:].any()


def test_ring_overwrites_oldest_and_clears_old_padding():
    buf = EpisodeBuffer(SMALL_INFO, capacity=2)
    buf.add(random_batch(SMALL_INFO, [6, 6]), torch.tensor([6, 6]))
    buf.add(random_batch(SMALL_INFO, [2], seed=5), torch.tensor([2]))
    assert buf.size == 2 and buf.position == 1
    assert torch.equal(buf.lengths, torch.tensor([2, 6]))
    assert not buf.storage.filled[0, 2:].any()
    assert torch.all(buf.storage.obs[0, 3:] == 0)


def test_sampling_is_uniform_over_stored_episodes():
    buf = EpisodeBuffer(SMALL_INFO, capacity=4, seed=1)
    buf.add(random_batch(SMALL_INFO, [1, 2, 3, 4]), torch.tensor([1, 2, 3, 4]))
    counts = torch.zeros(5)
    for _ in range(200):
        lengths = buf.sample(20).filled.sum(1)
        counts += torch.bincount(lengths, minlength=5)
    share = counts[1:] / counts.sum()
    assert torch.all((share - 0.25).abs() < 0.03)


def test_state_dict_round_trip_restores_sampling():
    buf = EpisodeBuffer(SMALL_INFO, capacity=6, seed=2)
    buf.add(random_batch(SMALL_INFO, [3, 5, 2]), torch.tensor([3, 5, 2]))
    copy = EpisodeBuffer(SMALL_INFO, capacity=6)
    copy.load_state_dict(buf.state_dict())
    a, b = buf.sample(4), copy.sample(4)
    assert torch.equal(a.obs, b.obs) and torch.equal(a.actions, b.actions)


def test_bytes_for_is_what_a_buffer_of_that_capacity_holds():
    assert EpisodeBuffer.bytes_for(SMALL_INFO, 7) == EpisodeBuffer(SMALL_INFO, 7).nbytes() > 0
