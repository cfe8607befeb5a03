"""The slides' framework examples, in PyTorch.

torch is imported inside the functions, never at module level, so that `import signlab.lab` stays
NumPy only.
"""

from __future__ import annotations


def slides_autodiff(steps: int = 100, lr: float = 0.1, verbose: bool = True) -> dict:
    """Gradient descent by automatic differentiation, as on the slides.

    x = [2, 1] is a variable (requires_grad), y = [3, 5] a constant, z = [[2, 0]] an input;
    loss = Σ (x − y + z)², so ∂loss/∂x = 2(x − y + z) and the minimum is at x = y − z = [1, 5].
    Each step multiplies the residual x − y + z by (1 − 2·lr) = 0.8; after 100 steps the exact loss
    would be 17 · 0.8²⁰⁰ ≈ 7e-19, but in float32 (torch's default) x stalls within a rounding error
    of [1, 5], which leaves a loss of about 1e-12, the number the slides print.

    Returns {"loss_before", "loss_after", "x"}.
    """
    import torch

    x = torch.tensor([2.0, 1.0], requires_grad=True)  # the variable we optimise
    y = torch.tensor([3.0, 5.0])  # a constant
    z = torch.tensor([[2.0, 0.0]])  # an input, shape (1, 2): broadcasting makes the loss's terms (1, 2)
    opt = torch.optim.SGD([x], lr=lr)

    def loss_fn() -> torch.Tensor:
        return ((x - y + z) ** 2).sum()

    with torch.no_grad():
        before = loss_fn().item()
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()  # autograd fills x.grad with 2(x − y + z), summed over z's row
        opt.step()  # x ← x − lr · x.grad
    with torch.no_grad():
        after = loss_fn().item()
    result = {"loss_before": before, "loss_after": after, "x": x.detach().tolist()}
    if verbose:
        print(f"loss before: {before}")
        print(f"loss after {steps} steps: {after:.3g}")
        print(f"x = [{result['x'][0]:.6f}, {result['x'][1]:.6f}]  (the minimum is at y - z = [1, 5])")
    return result
