"""The training optimizer: fused Adam where torch supports it, numerically the same as plain Adam."""

import torch

from fastdipole.nn import DipoleModel
from fastdipole.train import make_optimizer


def test_fused_adam_matches_plain_adam_on_a_model():
    torch.manual_seed(0)
    ours = DipoleModel.from_config(n_features=8, n_sensitivities=4)
    plain = DipoleModel.from_config(n_features=8, n_sensitivities=4)
    plain.load_state_dict(ours.state_dict())
    start = {k: v.clone() for k, v in ours.state_dict().items()}
    opt_ours = make_optimizer(ours.parameters(), lr=1e-2)
    opt_plain = torch.optim.Adam(plain.parameters(), lr=1e-2)
    assert opt_ours.defaults.get("fused"), "fused Adam should be available for CPU float32 in torch >= 2.4"
    for step in range(3):
        for p, q in zip(ours.parameters(), plain.parameters()):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_plain.step()
    for (name, p), q in zip(ours.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    moved = [k for k, v in ours.state_dict().items() if not torch.equal(v, start[k])]
    assert moved, "three Adam steps changed no parameter"
