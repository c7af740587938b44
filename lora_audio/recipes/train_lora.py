"""The LoRA fine-tuning recipe, top to bottom: setup -> train -> save -> cleanup.

    recipe = LoRATrainingRecipe(cfg, resume=False, overwrite=False)
    recipe.setup()          # run folder, accelerator, model + LoRA, latent cache, optimizer, resume
    result = recipe.train() # steps, validation, early stopping, checkpoints, samples
    recipe.save(result)     # final adapter (best checkpoint), README.md, summary.json
    recipe.cleanup()

or :func:`run_training`, which does all four. Everything random is derived from
``train.seed`` and the micro-batch index (data order, noise, timesteps, LoRA dropout), so a
run is deterministic on CPU and a resumed run reaches the same adapter bit for bit.

Data parallel: under ``accelerate launch`` each process takes its own slice of every global
batch; LoRA gradients are averaged across processes (one all-reduce of the flattened
gradients per optimizer step) before clipping, so every process applies the same update.
Only the main process writes files.

Run folder (``train.output_dir``)::

    config.yaml        the resolved config
    metrics.jsonl      {"step", "loss", "lr", "grad_norm", "samples_per_s"} and {"step", "val_loss"}
    tb/                TensorBoard scalars
    checkpoints/       initial/ (the untrained LoRA), best/ (weights), last/ (full state)
    samples/step-N/    generated audio for the fixed prompts and seeds
    adapter/           the final adapter: the best checkpoint, via adapters.save_adapter
    README.md          model card; summary.json: the run's numbers
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from lora_audio import adapters
from lora_audio.config import RunConfig, to_dict
from lora_audio.files import write_json_atomic, write_text_atomic
from lora_audio.training.checkpoint import (
    TRAINABLE_NAME,
    load_checkpoint,
    save_checkpoint,
    trainable_state,
)
from lora_audio.training.early_stopping import EarlyStopping
from lora_audio.training.logger import MetricLogger
from lora_audio.training.recompute import RecomputeBlocks
from lora_audio.training.schedule import lr_at, set_lr

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BANNER = "!" * 78


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why and what to do."""


class NonFiniteLoss(TrainingError):
    """A NaN/inf loss with ``train.on_nonfinite=stop``."""


@dataclass
class TrainResult:
    """What a run did (also written to ``summary.json``)."""

    output_dir: str
    steps: int = 0
    best_step: int = -1
    best_val_loss: float = math.nan
    baseline_val_loss: float = math.nan
    final_val_loss: float = math.nan
    stop_reason: str = ""
    interrupted: bool = False
    untrained: bool = False
    adapter_dir: str = ""
    adapter_sha256: str = ""
    adapter_bytes: int = 0
    trainable_params: int = 0
    total_params: int = 0
    train_items: int = 0
    val_items: int = 0
    prior_items: int = 0
    train_seconds_of_audio: float = 0.0
    elapsed_s: float = 0.0
    skipped_steps: list[int] = field(default_factory=list)
    rank_hashes: list[str] = field(default_factory=list)

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable_params / max(self.total_params, 1)

    def format(self) -> str:
        """The final summary the CLI prints."""
        lines = [
            f"run: {self.output_dir}",
            f"steps: {self.steps} ({self.stop_reason})",
            f"val loss: baseline {self.baseline_val_loss:.5f} -> best {self.best_val_loss:.5f} "
            f"at step {self.best_step} (last {self.final_val_loss:.5f})",
            f"trainable: {self.trainable_params:,} of {self.total_params:,} parameters "
            f"({self.trainable_percent:.3f} %)",
            f"time: {self.elapsed_s:.1f} s",
            f"adapter: {self.adapter_dir} ({self.adapter_bytes / 1e6:.2f} MB, "
            f"sha256 {self.adapter_sha256[:16]})",
        ]
        if self.untrained:
            lines.append(
                "WARNING: no evaluation beat the untrained baseline: the adapter is the "
                "UNTRAINED LoRA (a no-op). Lower the learning rate or check the data."
            )
        if self.skipped_steps:
            lines.append(f"skipped steps (non-finite loss): {self.skipped_steps}")
        return "\n".join(lines)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (stable across runs, processes and platforms)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class LoRATrainingRecipe:
    """One LoRA training run of ``cfg``. See the module docstring for the order of calls."""

    def __init__(self, cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> None:
        self.cfg = cfg
        self.tc = cfg.train
        self.resume = resume
        self.overwrite = overwrite
        self.out = Path(cfg.train.output_dir)
        self._stop_signal: int | None = None
        self._old_handlers: dict[int, Any] = {}
        self._perms: dict[int, torch.Tensor] = {}
        self.logger: MetricLogger | None = None

    # ================================================================== setup
    def setup(self) -> None:
        """Run folder, accelerator, model + LoRA, latent cache, optimizer; resume if asked."""
        from accelerate import Accelerator

        tc = self.tc
        if tc.device == "cuda" and not torch.cuda.is_available():
            raise TrainingError("train.device=cuda but no CUDA device is visible; use auto or cpu")
        self.accelerator = Accelerator(mixed_precision=tc.mixed_precision, cpu=tc.device == "cpu")
        acc = self.accelerator
        self.is_main = acc.is_main_process
        self.world = acc.num_processes
        self.rank = acc.process_index
        self._prepare_run_folder()

        # model + LoRA (the same init on every process: seeded before injection)
        from lora_audio.models import load_model

        self.model = load_model(
            self.cfg.model.family, self.cfg.model.path, acc.device, DTYPES[self.cfg.model.dtype]
        )
        self.prior = self._prior_items()  # from the base model: before LoRA
        torch.manual_seed(derive_seed(tc.seed, "lora-init"))
        adapters.inject_lora(self.model, self.cfg.lora)
        denoiser = self.model.denoiser
        self.params = [p for p in denoiser.parameters() if p.requires_grad]
        for p in self.params:  # fp32 master LoRA weights, whatever the base dtype
            p.data = p.data.float()
        self.trainable, self.total = adapters.count_parameters(denoiser)
        if tc.gradient_checkpointing:
            if not getattr(denoiser, "_supports_gradient_checkpointing", False):
                raise TrainingError(
                    f"train.gradient_checkpointing: the {self.model.family} denoiser does not "
                    "support it; set it to false"
                )
            denoiser.enable_gradient_checkpointing(RecomputeBlocks(tc.checkpoint_keep_every))

        # data: encode what the cache lacks, then datasets over it
        from lora_audio.data import LatentDataset, collate
        from preprocessing.latent_cache import ensure_cache

        if not self.cfg.data.manifest:
            raise TrainingError("data.manifest: empty; give the manifest.jsonl cut-music wrote")
        self.cache = ensure_cache(self.cfg, self.model, progress=self.is_main and tc.progress_bar)
        self.train_set = LatentDataset(self.cache, "train")
        self.val_set = LatentDataset(self.cache, "val", augmented=False)
        self.collate = collate
        if len(self.train_set) == 0:
            raise TrainingError(f"{self.cfg.data.manifest}: no segment in the train split")
        if len(self.val_set) == 0:
            raise TrainingError(
                f"{self.cfg.data.manifest}: no segment in the val split; validation and early "
                "stopping need one (give some segments split=val, e.g. cut-music's split option)"
            )

        # optimizer (prepared for fp16 loss scaling; the model is not wrapped: see docstring)
        optimizer = torch.optim.AdamW(
            self.params,
            lr=tc.lr,
            betas=(tc.betas[0], tc.betas[1]),
            eps=tc.eps,
            weight_decay=tc.weight_decay,
        )
        self.optimizer = acc.prepare(optimizer)
        self.stopper = EarlyStopping(tc.patience, tc.min_delta)
        self.start_step = 0
        self.skipped: list[int] = []
        self.evaluations = 0
        self.elapsed_before = 0.0

        ckpt = self.out / "checkpoints"
        if self.resume:
            self._load_last(ckpt / "last")
        else:
            self.initial = trainable_state(denoiser)
            if self.is_main:
                save_checkpoint(ckpt / "initial", denoiser, None, 0)
        if self.is_main:
            metrics = self.out / "metrics.jsonl"
            MetricLogger.truncate_after(metrics, self.start_step if self.resume else -1)
            self.logger = MetricLogger(metrics, self.out / "tb" if tc.tensorboard else None)
        self._install_signal_handlers()

    def _prepare_run_folder(self) -> None:
        out = self.out
        if self.resume:
            if not (out / "checkpoints" / "last" / "state.json").is_file():
                raise TrainingError(
                    f"{out}: nothing to resume (no checkpoints/last); start without --resume"
                )
            self._warn_config_changes()
        elif out.exists() and any(out.iterdir()):
            if not self.overwrite:
                raise TrainingError(
                    f"{out}: run folder exists; pass --resume to continue it, --overwrite to "
                    "replace it, or choose another train.output_dir"
                )
            if not (out / "config.yaml").is_file():
                raise TrainingError(
                    f"{out}: exists and is not a lora-audio run folder (no config.yaml); "
                    "refusing to delete it with --overwrite"
                )
            self.accelerator.wait_for_everyone()
            if self.is_main:
                shutil.rmtree(out)
        self.accelerator.wait_for_everyone()
        if self.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(
                out / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(to_dict(self.cfg)))
            )
        self.accelerator.wait_for_everyone()

    def _warn_config_changes(self) -> None:
        path = self.out / "config.yaml"
        if not path.is_file():
            return
        before = OmegaConf.to_container(OmegaConf.load(path))
        now = to_dict(self.cfg)
        changed = [
            f"{s}.{k}"
            for s in now
            for k in now[s]
            if isinstance(before, dict) and before.get(s, {}).get(k) != now[s][k]
        ]
        if changed:
            log.warning("resuming with a changed config: %s", ", ".join(changed))

    def _load_last(self, folder: Path) -> None:
        ckpt = load_checkpoint(folder, self.model.denoiser, self.optimizer.optimizer)
        state = ckpt.state
        self.start_step = ckpt.step
        self.stopper.load_state_dict(state["early_stopping"])
        self.skipped = list(state.get("skipped_steps", []))
        self.evaluations = int(state.get("evaluations", 0))
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        if state.get("scaler") and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.initial = load_file(str(self.out / "checkpoints" / "initial" / TRAINABLE_NAME))
        log.info("resumed %s at step %d", self.out, self.start_step)

    # ============================================================== the data
    def _prior_items(self) -> list[dict[str, Any]]:
        """Prior-preservation items (``train.prior_prompts``), generated by the main process
        or read back from ``prior.safetensors`` when it has the same settings."""
        from lora_audio.training.prior import (
            PRIOR_AUDIO,
            PRIOR_FILE,
            PriorSettings,
            generate_prior,
            load_prior,
            save_prior,
        )

        tc = self.tc
        if not tc.prior_prompts:
            return []
        settings = PriorSettings(
            prompts=list(tc.prior_prompts),
            clips_per_prompt=tc.prior_clips,
            seconds=float(self.cfg.data.seconds),
            steps=tc.sample_steps,
            guidance=tc.sample_guidance,
            seeds=[
                [derive_seed(tc.seed, "prior-clip", i, j) % 2**31 for j in range(tc.prior_clips)]
                for i in range(len(tc.prior_prompts))
            ],
            base_fingerprint=adapters.base_fingerprint(self.model),
        )
        path = self.out / PRIOR_FILE
        items = load_prior(path, settings) if self.is_main else None
        if self.is_main and items is None:
            started = time.perf_counter()
            items = generate_prior(self.model, settings, self.out / PRIOR_AUDIO)
            save_prior(path, settings, items)
            log.info(
                "prior preservation: %d base-model clips in %.1f s (%s)",
                len(items),
                time.perf_counter() - started,
                self.out / PRIOR_AUDIO,
            )
        self.accelerator.wait_for_everyone()
        if items is None:  # the other processes read what the main one wrote
            items = load_prior(path, settings)
        if items is None:
            raise TrainingError(f"{path}: the prior clips were not written; see the log above")
        return items

    def _item_index(self, position: int) -> int:
        """Index of the train item at ``position`` of the endless, per-epoch shuffled stream."""
        n = len(self.train_set)
        epoch, offset = divmod(position, n)
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(derive_seed(self.tc.seed, "epoch", epoch))
            self._perms = {epoch: torch.randperm(n, generator=g)}
        return int(self._perms[epoch][offset])

    def _micro_batch(self, micro: int) -> dict[str, Any]:
        """This process's slice of global micro-batch ``micro``, on the device."""
        b = self.tc.batch_size
        first = (micro * self.world + self.rank) * b
        items = [self.train_set[self._item_index(first + i)] for i in range(b)]
        if self.prior:
            g = torch.Generator().manual_seed(derive_seed(self.tc.seed, "prior", micro, self.rank))
            use = torch.rand(b, generator=g) < self.tc.prior_share
            pick = torch.randint(len(self.prior), (b,), generator=g)
            for i in range(b):
                if use[i]:
                    items[i] = dict(self.prior[int(pick[i])])  # a copy: dropout replaces cond
        if self.tc.caption_dropout > 0:
            seed = derive_seed(self.tc.seed, "caption-dropout", micro, self.rank)
            drop = torch.rand(b, generator=torch.Generator().manual_seed(seed))
            for item, u in zip(items, drop.tolist(), strict=True):
                if u < self.tc.caption_dropout:
                    item["cond"] = self._unconditional(item)
        return self._to_device(self.collate(items))

    def _unconditional(self, item: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The family's unconditional conditioning in place of ``item``'s caption."""
        cond = item["cond"]
        with torch.no_grad():
            batch = {name: t.unsqueeze(0).to(self.accelerator.device) for name, t in cond.items()}
            null = self.model.unconditional(batch, [item["valid_seconds"]])
        if set(null) != set(cond):
            raise TrainingError(
                f"train.caption_dropout: the {self.model.family} family's unconditional "
                f"conditioning has {sorted(null)}, the cache {sorted(cond)}; set "
                "train.caption_dropout=0 or rebuild the latent cache"
            )
        return {name: t[0].detach().float().cpu() for name, t in null.items()}

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        dev = self.accelerator.device
        batch["latents"] = batch["latents"].to(dev, self.model.dtype)
        batch["mask"] = batch["mask"].to(dev)
        batch["cond"] = {k: v.to(dev) for k, v in batch["cond"].items()}
        return batch

    # ============================================================== train
    def train(self) -> TrainResult:
        """The loop: steps, logging, validation, early stopping, checkpoints, samples."""
        tc, acc = self.tc, self.accelerator
        result = TrainResult(output_dir=str(self.out))
        started = time.perf_counter()
        step = self.start_step
        if step == 0:
            self._evaluate_and_checkpoint(0)
        bar = self._progress_bar()
        window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        stop_reason = ""
        while step < tc.max_steps and not self.stopper.stop:
            if self._should_stop_for_signal():
                stop_reason = (
                    f"interrupted by {signal.Signals(self._stop_signal).name} at step {step}"
                )
                result.interrupted = True
                break
            loss, grad_norm = self._train_step(step)
            step += 1
            if loss is not None:
                window_loss += loss
                window_steps += 1
            if step % tc.log_every == 0 or step == tc.max_steps:
                elapsed = time.perf_counter() - window_start
                mean_loss = window_loss / max(window_steps, 1)
                items = tc.log_every * tc.batch_size * tc.grad_accum * self.world
                row = {
                    "loss": mean_loss,
                    "lr": lr_at(step - 1, tc.lr, tc.min_lr, tc.warmup_steps, tc.max_steps),
                    "grad_norm": grad_norm,
                    "samples_per_s": items / max(elapsed, 1e-9),
                }
                if self.logger is not None:
                    self.logger.log(step, **row)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{row['lr']:.2e}")
                window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
            if bar is not None:
                bar.update(1)
            if step % tc.eval_every == 0 or step == tc.max_steps:
                self._evaluate_and_checkpoint(step, time.perf_counter() - started)
        if bar is not None:
            bar.close()
        if result.interrupted and self.is_main:
            self._save_last(step, time.perf_counter() - started)
            log.warning(
                "%s: checkpoint written to %s; continue with --resume",
                stop_reason,
                self.out / "checkpoints" / "last",
            )
        acc.wait_for_everyone()
        result.steps = step
        result.stop_reason = (
            stop_reason or self.stopper.reason or f"reached train.max_steps={tc.max_steps}"
        )
        if self.stopper.reason:
            log.warning("%s", self.stopper.reason)
        result.elapsed_s = self.elapsed_before + time.perf_counter() - started
        result.skipped_steps = list(self.skipped)
        return result

    def _train_step(self, step: int) -> tuple[float | None, float]:
        """One optimizer step (``grad_accum`` micro-batches). Returns (mean loss or None, grad norm)."""
        tc, acc, model = self.tc, self.accelerator, self.model
        set_lr(self.optimizer, lr_at(step, tc.lr, tc.min_lr, tc.warmup_steps, tc.max_steps))
        model.denoiser.train()
        losses: list[float] = []
        finite = True
        for a in range(tc.grad_accum):
            micro = step * tc.grad_accum + a
            batch = self._micro_batch(micro)
            torch.manual_seed(derive_seed(tc.seed, "dropout", micro, self.rank))
            noise = torch.Generator().manual_seed(derive_seed(tc.seed, "noise", micro, self.rank))
            with acc.autocast():
                loss = model.training_loss(batch["latents"], batch["cond"], batch["mask"], noise)
            value = float(loss.detach())
            if not math.isfinite(value):
                finite = False
                break
            acc.backward(loss / tc.grad_accum)
            losses.append(value)
        if self.world > 1:  # every process must take the same decision
            flag = acc.reduce(torch.tensor([0.0 if finite else 1.0], device=acc.device), "sum")
            finite = float(flag) == 0.0
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            if tc.on_nonfinite == "stop":
                if self.is_main:
                    self._save_last(step, 0.0)
                raise NonFiniteLoss(
                    f"non-finite loss at step {step + 1}: stopped (train.on_nonfinite=stop); "
                    f"a checkpoint of step {step} is in {self.out / 'checkpoints' / 'last'}. "
                    "Lower train.lr, use bf16 instead of fp16, or set train.on_nonfinite=skip"
                )
            log.warning("non-finite loss at step %d: batch skipped", step + 1)
            self.skipped.append(step + 1)
            return None, math.nan
        self._average_gradients()
        max_norm = tc.max_grad_norm if tc.max_grad_norm > 0 else math.inf
        grad_norm = float(acc.clip_grad_norm_(self.params, max_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_mean = sum(losses) / len(losses)
        if self.world > 1:
            loss_mean = float(acc.reduce(torch.tensor([loss_mean], device=acc.device), "mean"))
        return loss_mean, grad_norm

    def _average_gradients(self) -> None:
        """Mean of the LoRA gradients over processes: one all-reduce of them flattened."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = self.accelerator.reduce(torch.cat([g.flatten() for g in grads]), "mean")
        offset = 0
        for p in self.params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    # ========================================================= validation
    @torch.no_grad()
    def evaluate(self) -> float:
        """Validation loss with fixed noise and timesteps: comparable across evaluations and runs.

        Each val item ``j`` is repeated ``val_timesteps`` (K) times at timesteps
        ``(k + 0.5) / K``, with noise from a generator seeded by ``(val_seed, j)`` alone; the
        loss is the mean over items of the masked MSE. Independent of batch size, process
        count and order.
        """
        tc, acc, model = self.tc, self.accelerator, self.model
        model.denoiser.eval()
        k = tc.val_timesteps
        grid = (torch.arange(k, dtype=torch.float32) + 0.5) / k
        total = torch.zeros(2, dtype=torch.float64, device=acc.device)
        for j in range(self.rank, len(self.val_set), self.world):
            batch = self._to_device(self.collate([self.val_set[j]] * k))
            g = torch.Generator().manual_seed(derive_seed(tc.val_seed, "val", j))
            with acc.autocast():
                loss = model.training_loss(
                    batch["latents"], batch["cond"], batch["mask"], g, grid.to(acc.device)
                )
            total += torch.tensor([float(loss), 1.0], dtype=torch.float64, device=acc.device)
        if self.world > 1:
            total = acc.reduce(total, "sum")
        model.denoiser.train()
        return float(total[0] / total[1])

    def _evaluate_and_checkpoint(self, step: int, elapsed: float = 0.0) -> None:
        val = self.evaluate()
        self.evaluations += 1
        improved = self.stopper.update(step, val)
        if self.logger is not None:
            self.logger.log(step, val_loss=val, best_val_loss=self.stopper.best)
        log.info(
            "step %d: val loss %.6f%s",
            step,
            val,
            " (best)"
            if improved
            else f" (best {self.stopper.best:.6f} at step {self.stopper.best_step})",
        )
        if self.is_main:
            ckpt = self.out / "checkpoints"
            if improved:
                save_checkpoint(ckpt / "best", self.model.denoiser, None, step, {"val_loss": val})
            self._save_last(step, elapsed)
        tc = self.tc
        if tc.sample_every and step > 0 and self.evaluations % tc.sample_every == 0:
            self._write_samples(step)
        self.accelerator.wait_for_everyone()

    def _save_last(self, step: int, elapsed: float) -> None:
        state = {
            "early_stopping": self.stopper.state_dict(),
            "scheduler": {
                "kind": "warmup-cosine",
                "step": step,
                "lr": lr_at(
                    step, self.tc.lr, self.tc.min_lr, self.tc.warmup_steps, self.tc.max_steps
                ),
            },
            "skipped_steps": self.skipped,
            "evaluations": self.evaluations,
            "elapsed_s": self.elapsed_before + elapsed,
        }
        scaler = self.accelerator.scaler
        if scaler is not None:
            state["scaler"] = {
                k: float(v) if isinstance(v, torch.Tensor) else v
                for k, v in scaler.state_dict().items()
            }
        save_checkpoint(
            self.out / "checkpoints" / "last",
            self.model.denoiser,
            self.optimizer.optimizer,
            step,
            state,
        )

    # ============================================================ samples
    def _write_samples(self, step: int) -> None:
        """Audio for the fixed prompts and seeds into ``samples/step-N/`` (main process)."""
        if not self.is_main:
            return
        from lora_audio.audio import write_audio

        tc, model = self.tc, self.model
        folder = self.out / "samples" / f"step-{step:06d}"
        model.denoiser.eval()
        rng = torch.get_rng_state()  # generation must not disturb the training randomness
        for i, prompt in enumerate(tc.sample_prompts):
            for seed in tc.sample_seeds:
                with torch.no_grad(), self.accelerator.autocast():
                    audio = model.generate(
                        prompt,
                        seconds=tc.sample_seconds,
                        steps=tc.sample_steps,
                        guidance=tc.sample_guidance,
                        seed=seed,
                    )
                write_audio(folder / f"p{i:03d}_s{seed}.wav", audio[0].numpy(), model.sample_rate)
        torch.set_rng_state(rng)
        write_json_atomic(
            folder / "prompts.json", {"prompts": tc.sample_prompts, "seeds": tc.sample_seeds}
        )
        model.denoiser.train()
        log.info("samples of step %d in %s", step, folder)

    # ============================================================== save
    def save(self, result: TrainResult) -> TrainResult:
        """Final adapter = best checkpoint; integrity check, README.md and summary.json."""
        acc = self.accelerator
        result.best_step = self.stopper.best_step
        result.best_val_loss = self.stopper.best
        result.baseline_val_loss = self.stopper.history[0][1] if self.stopper.history else math.nan
        result.final_val_loss = self.stopper.history[-1][1] if self.stopper.history else math.nan
        result.trainable_params, result.total_params = self.trainable, self.total
        result.train_items, result.val_items = len(self.train_set), len(self.val_set)
        result.prior_items = len(self.prior)
        result.train_seconds_of_audio = sum(
            float(self.cache.entries[k].get("valid_seconds", 0.0)) for k in self.train_set.keys
        )
        result.rank_hashes = self._rank_hashes()
        if len(set(result.rank_hashes)) > 1:
            raise TrainingError(
                f"processes ended with different LoRA weights: {result.rank_hashes}"
            )
        if self.is_main and not result.interrupted:
            best = self.out / "checkpoints" / "best"
            load_checkpoint(best, self.model.denoiser, restore_rng=False)
            weights = trainable_state(self.model.denoiser)
            differs = any(not torch.equal(weights[n], self.initial[n]) for n in weights)
            result.untrained = result.best_step <= 0 or not differs
            info = adapters.save_adapter(
                self.model,
                self.out / "adapter",
                self.cfg.lora,
                training_config=to_dict(self.cfg),
                overwrite=True,
            )
            result.adapter_dir = str(self.out / "adapter")
            result.adapter_sha256 = info.weights_sha256
            result.adapter_bytes = (self.out / "adapter" / adapters.WEIGHTS_NAME).stat().st_size
            if result.untrained:
                log.warning(
                    "%s\nNO EVALUATION BEAT THE UNTRAINED BASELINE (val loss %.6f at step 0):\n"
                    "the saved adapter is the untrained LoRA, a no-op. It is marked as such in\n"
                    "summary.json and README.md. Lower train.lr, train longer, or check the data.\n%s",
                    BANNER,
                    result.baseline_val_loss,
                    BANNER,
                )
            write_text_atomic(self.out / "README.md", model_card(self.cfg, result))
        if self.is_main:
            summary = asdict(result) | {"trainable_percent": result.trainable_percent}
            summary = {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in summary.items()
            }
            write_json_atomic(self.out / "summary.json", summary)
        acc.wait_for_everyone()
        return result

    def _rank_hashes(self) -> list[str]:
        """sha256 of each process's trainable weights (all equal in a healthy data-parallel run)."""
        h = hashlib.sha256()
        for name, t in sorted(trainable_state(self.model.denoiser).items()):
            h.update(name.encode())
            h.update(t.numpy().tobytes())
        mine = h.hexdigest()
        if self.world == 1:
            return [mine]
        from accelerate.utils import gather_object

        return list(gather_object([mine]))

    # ============================================================ cleanup
    def cleanup(self) -> None:
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers = {}

    # ---------------------------------------------------------------- helpers
    def _install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: Any) -> None:
            if self._stop_signal is not None:  # second Ctrl-C: leave at once
                raise KeyboardInterrupt
            self._stop_signal = signum
            log.warning("%s received: stopping after this step", signal.Signals(signum).name)

        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._old_handlers[signum] = signal.signal(signum, handle)

    def _should_stop_for_signal(self) -> bool:
        stop = self._stop_signal is not None
        if self.world > 1:
            acc = self.accelerator
            mine = torch.tensor([float(self._stop_signal or 0)], device=acc.device)
            signals = acc.gather(mine)
            if float(signals.max()) > 0 and not stop:
                self._stop_signal = int(float(signals.max()))
            stop = float(signals.max()) > 0
        return stop

    def _progress_bar(self) -> Any:
        if not (self.is_main and self.tc.progress_bar):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.tc.max_steps,
            initial=self.start_step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )


def model_card(cfg: RunConfig, result: TrainResult) -> str:
    """README.md of a run: base, data, settings, metrics, how to load."""
    warning = ""
    if result.untrained:
        warning = (
            "\n> **WARNING: untrained adapter.** No validation evaluation beat the untrained "
            f"baseline (val loss {result.baseline_val_loss:.6f} at step 0), so the best checkpoint "
            "is the initial LoRA, which changes nothing. Do not publish it.\n"
        )
    lora, tc = cfg.lora, cfg.train
    extras = ""
    if result.prior_items:
        extras += (
            f"- prior preservation: {result.prior_items} base-model clips of "
            f"{', '.join(repr(p) for p in tc.prior_prompts)} in `prior/`, "
            f"{tc.prior_share:g} of the training items\n"
        )
    if tc.caption_dropout:
        extras += f"- caption dropout: {tc.caption_dropout:g}\n"
    return f"""# LoRA adapter: {Path(result.output_dir).name}
{warning}
- base model: `{cfg.model.path}` ({cfg.model.family}, {cfg.model.dtype})
- data: {result.train_items} training items ({result.train_seconds_of_audio:.1f} s of audio), {result.val_items} validation items, `{cfg.data.manifest}`
{extras}- LoRA: rank {lora.rank}, alpha {lora.alpha:g}, dropout {lora.dropout:g} ({lora.dropout_placement}), targets {", ".join(lora.targets)}{" + " + ", ".join(lora.include) if lora.include else ""}
- trainable parameters: {result.trainable_params:,} of {result.total_params:,} ({result.trainable_percent:.3f} %)
- training: {result.steps} steps of batch {tc.batch_size} x {tc.grad_accum} accumulation, AdamW lr {tc.lr:g} (warm-up {tc.warmup_steps}, cosine to {tc.min_lr:g}), weight decay {tc.weight_decay:g}, {tc.mixed_precision} precision, seed {tc.seed}
- stopped: {result.stop_reason}
- validation loss (fixed noise and timesteps): baseline {result.baseline_val_loss:.6f}, best {result.best_val_loss:.6f} at step {result.best_step}
- adapter weights sha256: `{result.adapter_sha256}`
- time: {result.elapsed_s:.1f} s

The full resolved configuration is in `config.yaml`; loss curves in `metrics.jsonl` and `tb/`.

## Use it

```bash
lora-audio infer --adapter {result.adapter_dir} --prompt "..."
```

```python
from lora_audio.models import load_model
from lora_audio.adapters import load_adapters

model = load_model("{cfg.model.family}", "{cfg.model.path}")
load_adapters(model, [("{result.adapter_dir}", 1.0)])
audio = model.generate("...", seconds=10)
```

`adapter/pytorch_lora_weights.safetensors` is a standard diffusers LoRA file (scale baked
into `lora_B`), loadable with `pipe.load_lora_weights(...)`.
"""


def run_training(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """setup -> train -> save -> cleanup."""
    recipe = LoRATrainingRecipe(cfg, resume=resume, overwrite=overwrite)
    try:
        recipe.setup()
        result = recipe.train()
        return recipe.save(result)
    finally:
        recipe.cleanup()
