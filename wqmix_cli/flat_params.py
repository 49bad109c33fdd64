"""The trained parameters as the optimiser and the gradient clip see them.

On the CPU an optimiser step and a gradient clip over the 42 parameter tensors of a
CW-QMIX policy cost about ten small ops per tensor (the multi-tensor kernels loop over
the list); over one flat tensor they are a handful of ops: about 3 ms of an update became
1.2-1.4 ms on 2 cores. There each parameter and its ``.grad`` become views into one buffer
each, so the networks and ``state_dict`` work as before. On a GPU the tensors stay apart: cuDNN's
GRU wants its own weights in one chunk, and the CUDA graph removes the per-op cost anyway.

Checkpoints always hold the optimiser state one entry per parameter, whichever the layout,
so runs resume across devices and from earlier releases.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class TrainedParameters:
    """``tensors``: what the optimiser steps and the clip scales (``[flat]`` or ``params``)."""

    def __init__(self, params: list[nn.Parameter], flat: bool) -> None:
        self.params = params
        self.flat: nn.Parameter | None = None
        self.tensors = params
        if not flat:
            return
        data = torch.cat([p.detach().reshape(-1) for p in params])
        self.grads, self.grad_views, offset = torch.zeros_like(data), [], 0
        for p in params:
            p.data = data[offset : offset + p.numel()].view_as(p)
            self.grad_views.append(self.grads[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        self.flat = nn.Parameter(data)
        self.tensors = [self.flat]
        self.zero_grad()

    def zero_grad(self) -> None:
        """Zero the gradients. Flat: also hand each parameter its view again, as an optimiser's
        ``zero_grad()`` (``set_to_none``) elsewhere would leave the buffer behind."""
        if self.flat is None:
            for p in self.params:
                p.grad = None
            return
        buffer = self.flat.untyped_storage().data_ptr()
        if any(p.untyped_storage().data_ptr() != buffer for p in self.params):
            raise RuntimeError("the policy's parameters were replaced after its learner was built (policy.to(), "
                               ".float(), ...): build the learner after moving the policy; load weights with "
                               "load_state_dict")
        self.grads.zero_()
        self.flat.grad = self.grads
        for p, view in zip(self.params, self.grad_views):
            p.grad = view

    def _steps(self, optimizer: torch.optim.Optimizer) -> bool:
        params = optimizer.param_groups[0]["params"]
        return self.flat is not None and len(params) == 1 and params[0] is self.flat

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """``optimizer.state_dict()`` with one entry per parameter."""
        state = optimizer.state_dict()
        if not self._steps(optimizer):
            return state
        (group,) = state["param_groups"]
        merged = state["state"].get(0, {})
        entries, offset = {}, 0
        for index, p in enumerate(self.params):
            entries[index] = {
                key: value[offset : offset + p.numel()].view_as(p).clone()
                if torch.is_tensor(value) and value.shape == self.flat.shape
                else value.clone() if torch.is_tensor(value) else value  # the step count
                for key, value in merged.items()
            }
            offset += p.numel()
        return {"state": entries if merged else {}, "param_groups": [{**group, "params": list(entries)}]}

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: Mapping) -> None:
        """Load a state of one entry per parameter (``optimizer_state``) into ``optimizer``."""
        if not self._steps(optimizer):
            optimizer.load_state_dict(state)
            return
        (group,) = state["param_groups"]
        if len(group["params"]) != len(self.params):
            raise ValueError(f"the optimiser state holds {len(group['params'])} parameters; "
                             f"this policy trains {len(self.params)}")
        entries = [state["state"].get(index, {}) for index in group["params"]]
        merged = {}
        for key, first in entries[0].items():
            if torch.is_tensor(first) and first.shape == self.params[0].shape:
                merged[key] = torch.cat([entry[key].reshape(-1) for entry in entries])
            else:  # the step count, one per parameter and equal for all
                merged[key] = first.clone() if torch.is_tensor(first) else first
        optimizer.load_state_dict({"state": {0: merged} if merged else {}, "param_groups": [{**group, "params": [0]}]})
