"""Training: a run from its config to ``model.pt``, top to bottom.

Commands:
    CPU, built-in synthetic data:   ``partdisco train``
    one GPU, CUB:                   ``partdisco train dataset=cub data.root=DIR \
                                      model.features_weights=vgg19.pth``
    many GPUs (one machine):        ``torchrun --nproc_per_node 4 -m partdisco train dataset=cub ...``
    resume a killed run:            ``partdisco train resume=runs/NAME``

Reading order: :func:`fit` (run folder, lock, resume checks) -> :func:`build_run` (data, model, optimiser,
loader, writer: everything a run holds, built once) -> :func:`train_loop` (one screen: lr, draws, step,
logging, pictures, evaluation, checkpoints) -> :func:`finish_run` (final model, metrics, pictures).

Rooms: :mod:`.step` (one step: :class:`StepInputs`, :func:`draw_step`, :class:`Learner`, :func:`train_step`),
:mod:`.setup` (:func:`build_run`, :class:`Run`), :mod:`.loop` (:func:`train_loop`, Ctrl-C, step logging,
ETA), :mod:`.checkpointing` (checkpoint record, ``checkpoints/step_*.pt``, resume state), :mod:`.divergence`
(:class:`TrainingDivergedError`), :mod:`.finish` (:func:`finish_run`, held-out metrics and pictures),
:mod:`.fitting` (:func:`fit`), :mod:`.schedule` (learning rate per step), :mod:`.precision` (autocast,
GradScaler), :mod:`.monitor` (train.log, TensorBoard, W&B). This ``__init__`` re-exports what
``engine/train.py`` exported before it became a package; modules of the package import each other directly,
never through it.
"""

from partdisco.engine.train.divergence import NO_CHECKPOINT_YET, TrainingDivergedError
from partdisco.engine.train.finish import finish_run
from partdisco.engine.train.fitting import fit, prepare_run
from partdisco.engine.train.loop import train_loop
from partdisco.engine.train.setup import Run, build_run, check_logging_backends, slow_recipe_warning
from partdisco.engine.train.step import (
    Learner,
    StepDraws,
    StepInputs,
    color_target,
    draw_step,
    make_optimizer,
    sample_step_jitter,
    sample_step_warps,
    set_train_mode,
    step_generator,
    train_step,
)

__all__ = [
    "NO_CHECKPOINT_YET",
    "Learner",
    "Run",
    "StepDraws",
    "StepInputs",
    "TrainingDivergedError",
    "build_run",
    "check_logging_backends",
    "color_target",
    "draw_step",
    "finish_run",
    "fit",
    "make_optimizer",
    "prepare_run",
    "sample_step_jitter",
    "sample_step_warps",
    "set_train_mode",
    "slow_recipe_warning",
    "step_generator",
    "train_loop",
    "train_step",
]
