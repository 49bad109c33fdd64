"""GRU agents evaluated together over whole sequences, for the learner on the CPU.

On the CPU an update's GRUs are tiny (``[B*N, 64]`` per step) and cost what their ops cost
to launch as much as their FLOPs; autograd through ``nn.GRU`` records about ten nodes per
step per network. Here the input projections of all steps are one matmul, and the
recurrence is one C call (``gru_kernel.c``: per block of rows the recurrent matmul and the
gates, all T steps, rows split among threads), with a hand-written backward of one more C
call that leaves the weight gradients to one matmul over the whole sequence. G networks of
one shape that read the same inputs may run stacked (the learner passes one at a time: its
Q* and Q_tot halves run on separate threads). Where the kernel cannot be built, and on a
GPU (cuDNN), each network runs its own ``nn.GRU``.
"""
from __future__ import annotations

import torch
from torch import nn

from wqmix_cli.policy.agents import RNNAgent
from wqmix_cli.policy.native import gru_kernel, pointers


class _FusedGRU(torch.autograd.Function):
    """h_t = GRU(x_t, h_{t-1}) from h_{-1} = 0 for G networks at once (PyTorch's gate
    equations: r and z from sigmoid, n = tanh(x_n + r * (W_hn h + b_hn))).

    gates_x ``[G, T, M, 3H]`` (input projections ``W_ih x``), b_ih ``[G, 3H]``, w_hh
    ``[G, 3H, H]``, b_hh ``[G, 3H]`` -> hidden states ``[G, T, M, H]``; float32 on the CPU.
    Each direction is one C call over all T steps, its M sequences split among torch's
    threads; the weight and bias gradients are then a few matmuls and sums over all steps.
    """

    @staticmethod
    def forward(
        ctx, gates_x: torch.Tensor, b_ih: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor
    ) -> torch.Tensor:
        groups, steps, rows, three_h = gates_x.shape
        h_dim = three_h // 3
        gates_x, b_ih, b_hh, w_hh = gates_x.contiguous(), b_ih.contiguous(), b_hh.contiguous(), w_hh.contiguous()
        out = gates_x.new_empty(groups, steps, rows, h_dim)
        rz = gates_x.new_empty(groups, steps, rows, 2 * h_dim)
        h_n, n = torch.empty_like(out), torch.empty_like(out)
        w_t = w_hh.transpose(1, 2).contiguous()
        arrays = pointers(gates_x, b_ih, w_t, b_hh, rz, h_n, n, out)
        gru_kernel().gru_forward(groups, steps, rows, h_dim, torch.get_num_threads(), *arrays)
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(out, rz, h_n, n, w_hh)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, rz, h_n, n, w_hh = ctx.saved_tensors
        groups, steps, rows, h_dim = out.shape
        d_gates_h = out.new_empty(groups, steps, rows, 3 * h_dim)
        d_gates_x = torch.empty_like(d_gates_h)
        grad_out = grad_out.contiguous()
        arrays = pointers(grad_out, rz, h_n, n, out, w_hh, d_gates_h, d_gates_x)
        gru_kernel().gru_backward(groups, steps, rows, h_dim, torch.get_num_threads(), *arrays)
        # h_{-1} = 0, so step 0 adds nothing to the gradient of W_hh.
        later = d_gates_h[:, 1:].reshape(groups, (steps - 1) * rows, 3 * h_dim)
        d_w_hh = torch.bmm(later.transpose(1, 2), out[:, :-1].reshape(groups, (steps - 1) * rows, h_dim))
        return d_gates_x, d_gates_x.sum((1, 2)), d_w_hh, d_gates_h.sum((1, 2))


def _stack(agents: list[nn.Module], name: str) -> torch.Tensor:
    if len(agents) == 1:  # a view: no copy, and a cheaper backward
        return agents[0].get_parameter(name).unsqueeze(0)
    return torch.stack([agent.get_parameter(name) for agent in agents])


def evaluate_agents(agents: list[nn.Module], inputs: torch.Tensor) -> list[torch.Tensor]:
    """Utilities of each agent network on the same inputs: ``[B, T, N, in]`` -> G x ``[B, T, N, A]``.

    Recurrent agents of one shape, float32 on the CPU, run as one stacked GRU (gradients
    reach each network's own parameters); otherwise each network's ``forward``.
    """
    shapes = {tuple(p.shape for p in agent.parameters()) for agent in agents}
    stackable = len(shapes) == 1 and all(isinstance(agent, RNNAgent) for agent in agents)
    native = inputs.device.type == "cpu" and inputs.dtype == torch.float32 and gru_kernel() is not None
    if not (stackable and native):
        return [agent(inputs)[0] for agent in agents]
    b, t, n, d = inputs.shape
    groups = len(agents)
    x = inputs.transpose(0, 1).reshape(1, t * b * n, d).expand(groups, -1, -1)  # time-major rows
    x = torch.relu(torch.baddbmm(_stack(agents, "fc1.bias").unsqueeze(1), x, _stack(agents, "fc1.weight").mT))
    gates_x = torch.bmm(x, _stack(agents, "rnn.weight_ih_l0").mT).view(groups, t, b * n, -1)
    hidden = _FusedGRU.apply(gates_x, _stack(agents, "rnn.bias_ih_l0"), _stack(agents, "rnn.weight_hh_l0"),
                             _stack(agents, "rnn.bias_hh_l0"))
    hidden = hidden.view(groups, t * b * n, -1)
    q = torch.baddbmm(_stack(agents, "fc2.bias").unsqueeze(1), hidden, _stack(agents, "fc2.weight").mT)
    q = q.view(groups, t, b, n, -1).transpose(1, 2)  # [G, B, T, N, A]
    return list(q.unbind(0))
