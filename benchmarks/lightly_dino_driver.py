"""lightly's DINO (its loss, head, transform and momentum utilities) in a plain training loop, timed.

Run inside the benchmark venv by ``benchmarks/stage1_vs_lightly.py``; prints one JSON line.
"""

import copy
import json

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms.dino_transform import DINOTransform
from lightly.utils.scheduler import cosine_schedule

from lightly_common import backbone, forward_precision, loader, parser, timed_steps


class DINO(torch.nn.Module):
    def __init__(self, out_dim):
        super().__init__()
        self.student_backbone = backbone()
        self.student_head = DINOProjectionHead(192, 2048, 256, out_dim, freeze_last_layer=1)
        self.teacher_backbone = copy.deepcopy(self.student_backbone)
        self.teacher_head = DINOProjectionHead(192, 2048, 256, out_dim)
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)

    def student(self, x):
        return self.student_head(self.student_backbone(x))

    def teacher(self, x):
        return self.teacher_head(self.teacher_backbone(x))


def main():
    arguments = parser()
    arguments.add_argument("--out-dim", type=int, default=65536)
    args = arguments.parse_args()
    batches = loader(args, DINOTransform(global_crop_size=64, local_crop_size=32, n_local_views=4))
    model = DINO(args.out_dim)
    criterion = DINOLoss(output_dim=args.out_dim, warmup_teacher_temp_epochs=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4 * args.batch / 256, weight_decay=0.04)

    def step(batch, index):
        views, _ = batch
        momentum = cosine_schedule(index, args.steps, 0.996, 1)
        update_momentum(model.student_backbone, model.teacher_backbone, m=momentum)
        update_momentum(model.student_head, model.teacher_head, m=momentum)
        with forward_precision(args):
            teacher_out = [model.teacher(v) for v in views[:2]]
            student_out = [model.student(v) for v in views]
            loss = criterion(teacher_out, student_out, epoch=0)
        loss.backward()
        model.student_head.cancel_last_layer_gradients(current_epoch=0)
        optimizer.step()
        optimizer.zero_grad()

    print(json.dumps({"tool": "lightly", **timed_steps(batches, step, args.steps, args.warmup, args.batch)}))


if __name__ == "__main__":
    main()
