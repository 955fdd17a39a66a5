"""Knowledge distillation of a compact denoiser from a teacher.

BK-SDM (Kim et al., "BK-SDM: A Lightweight, Fast, and Cheap Version of Stable
Diffusion", 2023, §3.2) trains the student with

    L = L_task + λ_out · L_outKD + λ_feat · L_featKD,
    L_outKD  = E ‖ ε_T(z_t, y, t) − ε_S(z_t, y, t) ‖²,
    L_featKD = E Σ_l ‖ f_T^l(z_t, y, t) − f_S^l(z_t, y, t) ‖²,

with λ_out = λ_feat = 1 and f^l the outputs of the l-th U-Net stage (down blocks,
mid block, up blocks); SnapFusion (Li et al., NeurIPS 2023, §4) distils the
output the same way. Each squared norm is an element mean (MSE), the feature
term sums over stages, and all three terms see the *same* noisy input z_t (one
draw of t and ε) — here from the base task's DDPM objective (Ho et al. 2020,
eq. 14, `nas.tasks.diffusion`).

Teachers: an `nn.Module` denoiser (e.g. a diffusers model directory the caller
loaded), a plain callable ``teacher(x_t, t, context) -> ε`` (no features), or a
`Supernet`, which teaches with its largest sub-network (``space.max()``; in-place
distillation when the student is the same supernet). The teacher runs in eval
mode under ``torch.no_grad``: gradients reach the student only.

Width-searched students have fewer channels than the teacher. Elastic layers
slice the *first* channels of the shared weights (once-for-all), and a supernet
initialised from a teacher holds the teacher's weights in that order, so student
channel c is teacher channel c: the student's C channels are compared with the
teacher's first C channels (the one dimension that differs — dim 1 of (B, C, H, W)
maps, the last of (B, N, D) token maps). Features whose shapes differ in any
other way (resolution, more student channels) are skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.errors import ConfigError
from nas.supernet import Supernet
from nas.tasks.base import Batch, Task, denoise
from nas.tasks.diffusion import DiffusionObjective
from nas.tasks.util import eps_part, eval_mode, first_tensor

log = logging.getLogger(__name__)

#: Module paths compared by default: U-Net stages (diffusers' names) and DiT blocks.
DEFAULT_FEATURES = re.compile(
    r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+|transformer_blocks\.\d+)$"
)

Teacher = nn.Module | Callable[[Tensor, Tensor, Tensor | None], Tensor]


@contextmanager
def capture(model: nn.Module, paths: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Record the hidden states (first tensor) of `model`'s modules at `paths` in one forward.

    Hooks live only inside the block, so a model that is both student and teacher
    records into whichever dictionary is open. Modules that do not run (blocks an
    elastic depth skips) leave no entry.
    """
    feats: dict[str, Tensor] = {}
    handles = []

    def hook(path: str) -> Callable[[nn.Module, Any, Any], None]:
        def store(_m: nn.Module, _inp: Any, out: Any) -> None:
            t = first_tensor(out)
            if t is not None:
                feats[path] = t

        return store

    for p in paths:
        handles.append(model.get_submodule(p).register_forward_hook(hook(p)))
    try:
        yield feats
    finally:
        for h in handles:
            h.remove()


def teacher_slice(student: Tensor, teacher: Tensor) -> Tensor | None:
    """The part of `teacher` that corresponds to `student` (first channels), or None.

    Equal shapes: the teacher as is. Else exactly one non-batch dimension may differ,
    with the student smaller there: the teacher's leading slice of that dimension.
    """
    if student.shape == teacher.shape:
        return teacher
    if student.dim() != teacher.dim() or student.shape[0] != teacher.shape[0]:
        return None
    diff = [d for d in range(1, student.dim()) if student.shape[d] != teacher.shape[d]]
    if len(diff) != 1 or student.shape[diff[0]] > teacher.shape[diff[0]]:
        return None
    return teacher.narrow(diff[0], 0, student.shape[diff[0]])


class DistillationTask(Task):
    """A denoising task plus BK-SDM output- and feature-level distillation from a teacher.

    ``base`` must be a denoising task (it has an ``objective``: `DiffusionObjective`).
    ``feature_modules`` lists module paths to compare; the default takes the student's
    modules named ``down_blocks.i``, ``mid_block``, ``up_blocks.i`` (U-Nets) and
    ``transformer_blocks.i`` (DiTs). Paths absent in either model are skipped (logged
    once at debug level).
    """

    name = "distill"

    def __init__(
        self,
        base: Task,
        teacher: Teacher,
        *,
        out_weight: float = 1.0,
        feat_weight: float = 1.0,
        task_weight: float = 1.0,
        feature_modules: Sequence[str] | None = None,
    ) -> None:
        objective = getattr(base, "objective", None)
        if not isinstance(objective, DiffusionObjective):
            raise ConfigError(
                f"distillation needs a denoising base task (DigitsDenoising, "
                f"ImageFolderDenoising); {type(base).__name__} has no DiffusionObjective "
                "`objective` to share noisy inputs with the teacher"
            )
        if not callable(teacher):
            raise ConfigError(
                f"teacher {type(teacher).__name__} is not callable; give an nn.Module "
                "denoiser, a Supernet (its max sub-network teaches) or f(x_t, t, context)"
            )
        for key, w in (("out_weight", out_weight), ("feat_weight", feat_weight)):
            if w < 0:
                raise ConfigError(f"{key}={w}; distillation weights must be >= 0")
        self.base = base
        self.objective = objective
        self.teacher = teacher
        self.out_weight = float(out_weight)
        self.feat_weight = float(feat_weight)
        self.task_weight = float(task_weight)
        self.feature_modules = None if feature_modules is None else tuple(feature_modules)
        self._logged: set[str] = set()
        # the max sample of a supernet teacher, computed once
        self._teacher_max = teacher.space.max() if isinstance(teacher, Supernet) else None
        if self.feat_weight > 0 and not isinstance(teacher, nn.Module):
            log.info("teacher is a plain callable: no feature distillation (feat_weight ignored)")

    @property
    def io(self) -> Any:
        return getattr(self.base, "io", None)

    # -- delegation -----------------------------------------------------------------------
    def batches(
        self, batch_size: int, seed: int, device: str | torch.device = "cpu"
    ) -> Iterator[Batch]:
        return self.base.batches(batch_size, seed, device)

    def validate(self, model: nn.Module) -> dict[str, float]:
        return self.base.validate(model)

    # -- the loss -------------------------------------------------------------------------
    def _debug_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.debug(msg, *args)

    def _paths(self, student: nn.Module) -> list[str]:
        """Module paths to compare that both the student and the teacher have."""
        if self.feat_weight == 0 or not isinstance(self.teacher, nn.Module):
            return []
        if self.feature_modules is None:
            wanted = [n for n, _ in student.named_modules() if DEFAULT_FEATURES.match(n)]
        else:
            wanted = list(self.feature_modules)
        both = []
        for p in wanted:
            absent = []
            for who, model in (("student", student), ("teacher", self.teacher)):
                try:
                    model.get_submodule(p)
                except AttributeError:
                    absent.append(who)
            if absent:
                self._debug_once(
                    f"absent:{p}", "distill: %r absent in the %s; skipped", p, " and ".join(absent)
                )
            else:
                both.append(p)
        return both

    def _teacher_forward(
        self, x_t: Tensor, t: Tensor, ctx: Tensor | None, paths: Sequence[str]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        teacher = self.teacher
        with torch.no_grad():
            if not isinstance(teacher, nn.Module):
                return teacher(x_t, t, ctx), {}
            act = (
                teacher.activate(self._teacher_max)
                if isinstance(teacher, Supernet)
                else nullcontext()
            )
            with act, eval_mode(teacher), capture(teacher, paths) as feats:
                out = denoise(teacher, x_t, t, ctx)
            return out, dict(feats)

    def terms(
        self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The weighted sum ``loss`` and its (detached) terms ``task``, ``out_kd``, ``feat_kd``."""
        x0, ctx = batch["x0"], batch.get("context")
        x_t, t, eps = self.objective.noisy(x0, generator)  # one z_t for all three terms
        paths = self._paths(model)
        # teacher first: a supernet teacher re-activates its max sub-network, and
        # `activate` restores the student's sample before the student runs
        t_out, t_feats = self._teacher_forward(x_t, t, ctx, paths)
        with capture(model, paths) as s_feats:
            s_out = denoise(model, x_t, t, ctx)  # (B, C or 2C, H, W)
        c = x0.shape[1]
        task = self.objective.mse(s_out, eps)
        out_kd = F.mse_loss(eps_part(s_out, c).float(), eps_part(t_out, c).float().detach())
        feat_kd = s_out.new_zeros((), dtype=torch.float32)
        for p in paths:
            if p not in s_feats or p not in t_feats:
                self._debug_once(f"ran:{p}", "distill: %r did not run in both models; skipped", p)
                continue
            sf, tf = s_feats[p], t_feats[p]
            ref = teacher_slice(sf, tf)
            if ref is None:
                self._debug_once(
                    f"shape:{p}",
                    "distill: %r student %s vs teacher %s do not correspond; skipped",
                    p,
                    tuple(sf.shape),
                    tuple(tf.shape),
                )
                continue
            feat_kd = feat_kd + F.mse_loss(sf.float(), ref.float().detach())
        loss = self.task_weight * task + self.out_weight * out_kd + self.feat_weight * feat_kd
        # the parts are detached (for logging); `loss` carries the gradient
        parts = {"task": task, "out_kd": out_kd, "feat_kd": feat_kd}
        return {"loss": loss, **{k: v.detach() for k, v in parts.items()}}

    def loss(
        self, model: nn.Module, batch: Batch, generator: torch.Generator | None = None
    ) -> Tensor:
        """L_task + λ_out · L_outKD + λ_feat · L_featKD (BK-SDM) on one noisy draw."""
        return self.terms(model, batch, generator)["loss"]
