"""lightly's MoCo v3, BYOL or SimCLR (its heads, losses, transforms and momentum utilities) in a plain loop, timed.

Run inside the benchmark venv by ``benchmarks/stage1_vs_lightly.py --methods ...``; prints one JSON line.
The same model as gensis's ``ssl.method=``: a 4-layer ViT-Tiny (patch 8) and heads of width 2,048 and output
256 (MoCo v3: a 3-layer projector with batch norm and a 2-layer predictor; BYOL: 2 and 2; SimCLR: a 2-layer
projector), two 64 px views per image. lightly has no MoCo v3 loss of its own; its NTXentLoss at temperature
0.2 between the predictions and the momentum keys stands in (the same matrix products, over both views).
"""

import copy
import json

import torch
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead, MoCoProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from lightly.transforms.simclr_transform import SimCLRTransform
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from lightly_common import backbone, forward_precision, loader, parser, timed_steps


class Siamese(nn.Module):
    """Online backbone + projector (+ predictor) and, for MoCo v3 and BYOL, a momentum copy without predictor."""

    def __init__(self, method: str, hidden: int, out: int):
        super().__init__()
        self.backbone = backbone()
        if method == "simclr":
            self.projector = SimCLRProjectionHead(192, hidden, out)
            self.predictor = None
        else:
            self.projector = (MoCoProjectionHead(192, hidden, out, num_layers=3, batch_norm=True)
                              if method == "mocov3" else BYOLProjectionHead(192, hidden, out))
            self.predictor = BYOLPredictionHead(out, hidden, out)
            self.backbone_momentum = copy.deepcopy(self.backbone)
            self.projector_momentum = copy.deepcopy(self.projector)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.projector_momentum)

    def online(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projector(self.backbone(x))
        return self.predictor(z) if self.predictor is not None else z

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector_momentum(self.backbone_momentum(x))


def transform(method: str):
    if method == "simclr":
        return SimCLRTransform(input_size=64)
    return BYOLTransform(BYOLView1Transform(input_size=64), BYOLView2Transform(input_size=64))


def main():
    arguments = parser()
    arguments.add_argument("--method", required=True, choices=["mocov3", "byol", "simclr"])
    arguments.add_argument("--hidden", type=int, default=2048)
    arguments.add_argument("--out", type=int, default=256)
    args = arguments.parse_args()
    batches = loader(args, transform(args.method))
    model = Siamese(args.method, args.hidden, args.out)
    criterion = NegativeCosineSimilarity() if args.method == "byol" else NTXentLoss(temperature=0.2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=5e-4 * args.batch / 256, weight_decay=0.04)

    def step(batch, index):
        (x0, x1), _ = batch
        if args.method != "simclr":
            momentum = cosine_schedule(index, args.steps, 0.99, 1)
            update_momentum(model.backbone, model.backbone_momentum, m=momentum)
            update_momentum(model.projector, model.projector_momentum, m=momentum)
        with forward_precision(args):
            if args.method == "simclr":
                loss = criterion(model.online(x0), model.online(x1))
            else:
                p0, p1 = model.online(x0), model.online(x1)
                k0, k1 = model.target(x0), model.target(x1)
                loss = 0.5 * (criterion(p0, k1) + criterion(p1, k0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    result = timed_steps(batches, step, args.steps, args.warmup, args.batch)
    print(json.dumps({"tool": "lightly", "method": args.method, **result}))


if __name__ == "__main__":
    main()
