"""``DistillTrainer``: a ``transformers.Trainer`` whose loss is a registered method's, normalized globally.

What it changes in ``Trainer`` and why:

* ``get_batch_samples`` (called once per optimizer step with all its micro-batches): makes the on-policy / SeqKD
  decision for the step (:func:`~crossdistill.train.onpolicy.step_is_on_policy` at the step's λ from
  :class:`~crossdistill.train.onpolicy.LambdaController`, same on every process), regenerates the completions, THEN
  counts the target tokens of the step over micro-batches and processes. Counting after the
  rollouts is what makes generated tokens count (counting before them would leave the rollouts' tokens out).
* ``compute_loss``: one forward of the wrapped student (so DDP/FSDP hooks fire) that computes a single logit row;
  the final hidden states are captured from the decoder and the method computes its logits in chunks. Term sums
  are combined by :func:`crossdistill.losses.objective.combine_terms` with the global count, times the number of
  processes because DDP averages gradients.
* ``evaluate``: validation cross-entropy (nats per target token) and bits per byte of the student and the teacher,
  each on its own rendering of the same completions.
* ``log``: every loss term separately, the loss of on-policy and off-policy steps separately, the realised
  on-policy fraction and the scheduled λ (``lmbda``). The adaptive λ rule's signal is summed over processes at the
  end of each step (``_LambdaSignal``) and its state saved in every checkpoint, like the method state.
* Method state (:attr:`crossdistill.methods.Method.state`, e.g. DSKD's projectors): built once in ``__init__``;
  its parameters get their own optimizer param group (``create_optimizer``); it is saved in every checkpoint BEFORE
  the trainer state (so a checkpoint counted complete has it) and reloaded on resume (``train``). It is NOT a
  submodule of the student (the student's HF weights stay its own), so DDP does not see its parameters: their
  gradients are averaged over processes by an explicit all-reduce before gradient clipping (``_clip_grad_norm``),
  or before the optimizer step when clipping is off, and cleared after each step; clipping covers student and state
  together. FSDP / DeepSpeed with a parametric state are refused (their wrapping does not see extra parameters).
"""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from typing import Any

import torch
from transformers import ProgressCallback, Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from crossdistill.data.dataset import RenderedDataset, split_teacher
from crossdistill.io import write_json
from crossdistill.losses.objective import HARD_TERMS, Objective, combine_terms
from crossdistill.methods import Method, StateInputs, StepContext
from crossdistill.metrics import bits_per_byte, completion_bytes, per_row_ce
from crossdistill.models import base_model, head_info, head_logits, hidden_states
from crossdistill.positions import count_targets, shift_targets
from crossdistill.train.identity import FINGERPRINT_FILE
from crossdistill.train.onpolicy import LambdaController, Rollouts, rollout_seed, step_is_on_policy
from crossdistill.train.progress import LossBar


def realign_teacher_rows(teacher_hidden: torch.Tensor, mask: torch.Tensor, s_start: torch.Tensor,
                         t_start: torch.Tensor) -> torch.Tensor:
    """Move teacher rows to the student's positions when both tokenize the completion identically but the prompts
    differ (same tokenizer, different chat template). ``[B, T_t, H] -> [B, T, H]`` (zeros off target rows)."""
    B, T = mask.shape
    out = teacher_hidden.new_zeros(B, T, teacher_hidden.shape[-1])
    b, j = mask.nonzero(as_tuple=True)
    out[b, j] = teacher_hidden[b, j - s_start[b] + t_start[b]]
    return out


class MethodRunner:
    """Turns a batch into a :class:`StepContext` and the method's :class:`Objective`; used by the trainer and by
    anything that needs the training loss of a batch outside training (tests, benchmarks).

    It never names a method: what it computes from the teacher follows the method's record (``teacher``,
    ``cross_tokenizer``) and the teacher source (an online model, a cache when ``cached`` is set, or an inference
    server when ``served`` is set)."""

    def __init__(self, method: Method, dcfg: Any, teacher: torch.nn.Module | None, student_tok: Any,
                 teacher_tok: Any | None, cached: Any = None, state: Any = None, served: Any = None):
        self.method, self.dcfg, self.teacher = method, dcfg, teacher
        self.params = method.parse_params(dcfg.loss.params)
        self.state = state  # the method's per-run state (MethodState), built once by the trainer
        self.cached = cached  # a crossdistill.teacher.source.CachedTeacher: the teacher signal without a model
        self.served = served  # a crossdistill.teacher.server.ServedTeacher: the same, scored by a server per batch
        self.student_tok, self.teacher_tok = student_tok, teacher_tok or student_tok
        self.weights = {**method.default_weights, **dcfg.loss.weights}

    @torch.no_grad()
    def teacher_forward(self, batch: dict[str, torch.Tensor], logits: bool) -> torch.Tensor:
        dev = next(self.teacher.parameters()).device
        b = {"input_ids": batch["input_ids"].to(dev), "attention_mask": batch["attention_mask"].to(dev)}
        if logits:
            out = self.teacher(**b, use_cache=False).logits
            return out[..., : len(self.teacher_tok)].float()
        return hidden_states(self.teacher, b)

    def context(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                hidden: torch.Tensor | None = None) -> StepContext:
        """``hidden``: the student's final hidden states of ``inputs`` when already computed (several teachers
        share one student forward); otherwise computed here."""
        hidden = hidden_states(model, inputs) if hidden is None else hidden
        targets, mask = shift_targets(inputs["labels"])
        w, b, scale = head_info(model)
        lc = self.dcfg.loss
        ctx = StepContext(student_hidden=hidden, lm_head_weight=w, lm_head_bias=b, logit_scale=scale,
                          targets=targets, mask=mask, vocab_size=len(self.student_tok), batch=inputs,
                          student_tokenizer=self.student_tok, teacher_tokenizer=self.teacher_tok,
                          temperature=lc.temperature, t2_scale=lc.t2_scale, chunk_tokens=lc.chunk_tokens)
        if not self.method.needs_teacher:
            return ctx
        if self.served is not None:  # a sparse teacher scored on the teacher's own rendering of this very batch
            tb = split_teacher(inputs)
            src = tb if tb is not None else inputs
            t_targets, t_mask = shift_targets(src["labels"])
            if not self.method.cross_tokenizer and int(t_mask.sum()) != int(mask.sum()):
                raise RuntimeError(f"the teacher's rendering has {int(t_mask.sum())} target tokens, the student's "
                                   f"{int(mask.sum())}; a same-vocabulary objective needs them to match")
            ctx.teacher_signal = self.served.signal(src, t_targets, t_mask).to(hidden.device)
            ctx.teacher_vocab_size = self.served.vocab_size
            if self.method.cross_tokenizer:  # the alignment is built from the two collated batches
                ctx.teacher_targets, ctx.teacher_mask = t_targets.to(hidden.device), t_mask.to(hidden.device)
                ctx.teacher_batch = src
            return ctx
        if self.cached is not None:  # config validation admitted only methods that read a sparse teacher
            if self.method.cross_tokenizer:
                xt = self.cached.cross_tokenizer(inputs["example_index"], inputs, mask)
                ctx.teacher_signal, ctx.teacher_targets, ctx.teacher_mask = xt.signal, xt.targets, xt.mask
                ctx.alignment, ctx.teacher_vocab_size = xt.alignment, self.cached.vocab_size
            else:
                ctx.teacher_signal = self.cached.signal(inputs["example_index"], targets, mask)
            return ctx
        tb = split_teacher(inputs)
        src = tb if tb is not None else inputs
        ctx.teacher_vocab_size = len(self.teacher_tok)
        if self.method.cross_tokenizer:  # the teacher's own rendering, its own positions
            ctx.teacher_targets, ctx.teacher_mask = shift_targets(src["labels"])
            ctx.teacher_batch = src
        if self.method.teacher == "hidden":
            th = self.teacher_forward(src, logits=False).to(hidden.device)
            if tb is not None and not self.method.cross_tokenizer:
                th = realign_teacher_rows(th, mask, inputs["completion_start"], tb["completion_start"])
            tw, _, tscale = head_info(self.teacher)
            ctx.teacher_hidden, ctx.teacher_lm_head_weight = th, tw.to(hidden.device)
            ctx.teacher_logit_scale = tscale
        elif self.method.dense_teacher_rows is not None and self.method.dense_teacher_rows(self.params):
            ctx.teacher_logits = self.teacher_forward(src, logits=True).to(hidden.device)
        else:
            # Only the teacher's target rows are ever read: its head runs on those rows alone, never on the prompt
            # (most of a chat sequence), so teacher memory does not grow with the prompt.
            th = self.teacher_forward(src, logits=False)
            rows = th[ctx.teacher_mask.to(th.device)]
            ctx.teacher_target_logits = head_logits(self.teacher, rows, len(self.teacher_tok),
                                                    lc.chunk_tokens).to(hidden.device)
        return ctx

    def objective(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], count: Any = None,
                  hidden: torch.Tensor | None = None, on_policy: bool = False) -> Objective:
        """The weighted, globally normalized loss of one micro-batch (``count``: the step's global target count;
        default this batch's own; ``hidden``: see :meth:`context`). ``on_policy``: the completions are the
        student's own samples, so its hard-label terms and the method's ``sample_terms`` get weight 0 (and
        ``ctx.own_samples`` is set) unless ``onpolicy.ce_on_samples``."""
        ctx = self.context(model, inputs) if hidden is None else self.context(model, inputs, hidden)
        own_samples = on_policy and not self.dcfg.onpolicy.ce_on_samples
        ctx.own_samples = own_samples
        result = self.method.loss(ctx, self.params, self.state)
        if result.count != ctx.num_targets:
            raise RuntimeError(f"method {self.method.name!r} reported {result.count} target positions, the batch "
                               f"has {ctx.num_targets}: its sums would be normalized wrongly")
        soft = self.method.soft_terms
        weights = {k: self.weights.get(k, 0.0) for k in result.terms}
        if own_samples:  # what only rewards the student's own sample: CE and the method's sample terms
            off = self.method.terms_off_on_samples
            weights = {k: 0.0 if k in off else w for k, w in weights.items()}
        return combine_terms(result.terms, weights,
                             ctx.num_targets if count is None else count, temperature=self.dcfg.loss.temperature,
                             scale_soft_by_t2=self.dcfg.loss.t2_scale,
                             soft_terms=None if soft is None else [t for t in soft if t in result.terms])


def build_method_state(method: Method, dcfg: Any, student: torch.nn.Module, teacher: torch.nn.Module | None,
                       student_tok: Any, teacher_tok: Any | None) -> Any:
    """The method's per-run state (or ``None``), built from the unwrapped models, as the trainer does at step 0."""
    if method.state is None:
        return None
    return method.state(StateInputs(base_model(student), base_model(teacher) if teacher is not None else None,
                                    student_tok, teacher_tok or student_tok, method.parse_params(dcfg.loss.params)))


class _StateGrads(TrainerCallback):
    """Gradient bookkeeping the Trainer does only for the student, done for the method state's parameters:
    average over processes right before the optimizer step when ``_clip_grad_norm`` did not already
    (``max_grad_norm=0``), and clear them after the step (``Trainer`` calls ``model.zero_grad()``, which does not
    reach them)."""

    def __init__(self, trainer: DistillTrainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._sync_state_grads()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._state_synced = False
        for q in self.trainer._state_params():
            q.grad = None


def distillation_signal(obj: Objective) -> torch.Tensor:
    """What the adaptive λ rule measures of one micro-batch: its weighted distillation terms (every term but the
    hard-label ``ce`` / ``nll``, which on the student's own samples only measures how likely the student finds
    them), or the whole loss when the method has no other term. Normalized by the step's global count, so the sum
    over micro-batches and processes is the step's value."""
    soft = [v for name, v in obj.weighted.items() if name.split("@", 1)[0] not in HARD_TERMS]  # "@": per teacher
    return torch.stack(soft).sum() if soft else obj.loss.detach()


class _LambdaSignal(TrainerCallback):
    """The adaptive λ rule's measurement, at the end of every optimizer step on every process: before the next
    step's decision and before a checkpoint of this step is written."""

    def __init__(self, trainer: DistillTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._observe_lmbda_signal()


STATE_GROUP = "method_state"
"""Name of the optimizer parameter group of the method state's parameters."""


class DistillTrainer(Trainer):
    """Trainer for every crossdistill mode; see the module docstring."""

    def __init__(self, *args: Any, method: Method, dcfg: Any, teacher: torch.nn.Module | None,
                 student_tok: Any, teacher_tok: Any | None, train_data: RenderedDataset,
                 eval_data: RenderedDataset | None, separate_teacher: bool, cached_teacher: Any = None,
                 served_teacher: Any = None, rollout_server: Any = None,
                 fingerprint: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.method, self.dcfg = method, dcfg
        self.fingerprint = fingerprint  # written into every checkpoint: what --resume checks it continues
        self.teacher, self.student_tok, self.teacher_tok = teacher, student_tok, teacher_tok or student_tok
        self.train_data, self.eval_data = train_data, eval_data
        self.separate_teacher = separate_teacher
        self.loss_is_scaled_for_ga = True  # compute_loss divides by the global count itself
        self.model_accepts_loss_kwargs = False
        self.method_state = self._build_state()
        self.runner = MethodRunner(method, dcfg, teacher, student_tok, teacher_tok, cached=cached_teacher,
                                   state=self.method_state, served=served_teacher)
        self.rollouts = Rollouts(train_data, student_tok, teacher_tok, dcfg.onpolicy, separate_teacher,
                                 server=rollout_server)
        self.lmbda = LambdaController(dcfg.onpolicy.lmbda)  # each step's λ: a constant or a schedule
        self._lmbda_sum = 0.0  # scheduled λ summed over the steps since the last log
        self._step_signal: torch.Tensor | None = None  # adaptive λ: this process's signal of the current step
        if self.lmbda.adaptive:
            self.add_callback(_LambdaSignal(self))
        self._step_count: torch.Tensor | None = None
        self._step_on_policy = False
        self._metric_sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.args.device))
        self._metric_steps: dict[str, int] = defaultdict(int)
        self._state_synced = False
        if self.args.disable_tqdm is False and not dcfg.train.log_lines:
            self.remove_callback(ProgressCallback)
            self.add_callback(LossBar)

    # ------------------------------------------------------------------------------------------- method state
    def _build_state(self):
        state = build_method_state(self.method, self.dcfg, self.model, self.teacher, self.student_tok,
                                   self.teacher_tok)
        if state is None:
            return None
        if state.parameters():
            if self.is_fsdp_enabled or self.is_deepspeed_enabled:
                raise NotImplementedError(f"loss.name={self.method.name!r} trains parameters outside the student "
                                          "(its method state), which FSDP / DeepSpeed do not wrap; run it with DDP "
                                          "or on one process")
            self.add_callback(_StateGrads(self))
        state.to(self.args.device)
        return state

    def _state_params(self) -> list[torch.nn.Parameter]:
        return self.method_state.parameters() if self.method_state is not None else []

    def _sync_state_grads(self) -> None:
        """All-reduce (mean, like DDP) the state's gradients once per optimizer step. They are not a submodule of
        the student (its HF weights stay the student's alone), so DDP does not see them."""
        if self._state_synced or not self._state_params():
            return
        self._state_synced = True
        n = self.accelerator.num_processes
        if n <= 1:
            return
        params = self._state_params()
        for q in params:  # a rank whose batch had no aligned token still takes part in the collective
            if q.grad is None:
                q.grad = torch.zeros_like(q)
        flat = torch.cat([q.grad.reshape(-1) for q in params])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        flat /= n
        for q, g in zip(params, flat.split([q.numel() for q in params])):
            q.grad.copy_(g.view_as(q))

    def _clip_grad_norm(self, model):
        if not self._state_params():
            return super()._clip_grad_norm(model)
        self._sync_state_grads()  # every rank must see the same norm, so the same clipping coefficient
        # one norm over student and state together, as the official DSKD code clips
        return self.accelerator.clip_grad_norm_(itertools.chain(model.parameters(), self._state_params()),
                                                self.args.max_grad_norm)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        params = self._state_params()
        if params and not any(g.get("name") == STATE_GROUP for g in optimizer.param_groups):
            # The scheduler is created after this (create_optimizer_and_scheduler), so it scales this group's
            # own initial lr by the same schedule as the student's groups.
            optimizer.add_param_group({"params": params, "lr": self.method_state.lr or self.args.learning_rate,
                                       "weight_decay": self.args.weight_decay, "name": STATE_GROUP})
        return optimizer

    def _save_checkpoint(self, model, trial):
        if self.args.should_save:
            # before super(): it writes trainer_state.json last, which marks the checkpoint complete
            out = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            if self.method_state is not None and self.method_state.file:
                self.method_state.save(out)
            if self.fingerprint is not None:
                write_json(os.path.join(out, FINGERPRINT_FILE), self.fingerprint, sort_keys=True)
            if self.lmbda.adaptive:
                self.lmbda.save(out)
        super()._save_checkpoint(model, trial)

    def train(self, resume_from_checkpoint=None, *args: Any, **kwargs: Any):
        ckpt = resume_from_checkpoint
        if ckpt is True:
            ckpt = get_last_checkpoint(self.args.output_dir)
        state = self.method_state
        if state is not None and state.file and isinstance(ckpt, (str, os.PathLike)):
            if not os.path.isfile(os.path.join(ckpt, state.file)):
                raise FileNotFoundError(f"resume: checkpoint {ckpt} has no {state.file} for loss.name="
                                        f"{self.method.name!r}; it was not written by a run of this method")
            state.load(ckpt)
        if self.lmbda.adaptive and isinstance(ckpt, (str, os.PathLike)):
            if not os.path.isfile(os.path.join(ckpt, LambdaController.FILE)):
                raise FileNotFoundError(f"resume: checkpoint {ckpt} has no {LambdaController.FILE} for the adaptive "
                                        "onpolicy.lmbda rule; it was not written by a run with this schedule")
            self.lmbda.load(ckpt)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _observe_lmbda_signal(self) -> None:
        """Sum the step's adaptive-λ signal over processes (every process then folds in the same value) and give
        it to the controller."""
        signal = self._step_signal if self._step_signal is not None else torch.zeros((), device=self.args.device)
        signal = signal.detach().reshape(1).float()
        if self.accelerator.num_processes > 1:
            signal = self.accelerator.reduce(signal, reduction="sum")
        self.lmbda.observe(self._step_on_policy, float(signal))
        self._step_signal = None

    # ------------------------------------------------------------------------------------------- step assembly
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        op = self.dcfg.onpolicy
        lmbda = self.lmbda.value(self.state.global_step, self.state.max_steps)
        on = step_is_on_policy(self.args.seed, self.state.global_step, lmbda)
        if batches and (on or op.seq_kd):
            by = "student" if on else "teacher"
            sampler = self.accelerator.unwrap_model(self.model) if on else self.teacher
            step, rank = self.state.global_step, self.accelerator.process_index
            if on and self.rollouts.server is not None:  # vLLM rollouts: the server gets this step's weights
                if self.accelerator.is_main_process:
                    self.rollouts.server.sync(sampler, step)
                self.accelerator.wait_for_everyone()
            batches = [self.rollouts.regenerate(b, sampler, by, rollout_seed(self.args.seed, step, rank, i))
                       for i, b in enumerate(batches)]
        self._step_on_policy = on
        local = sum(count_targets(b["labels"]) for b in batches)
        count = torch.tensor(local, dtype=torch.long, device=device)
        if self.accelerator.num_processes > 1:
            count = self.accelerator.gather(count.reshape(1)).sum()
        self._step_count = count
        self.state.num_input_tokens_seen += int(count)  # D_S: target tokens seen, generated ones included
        key = "on_policy" if on else "off_policy"
        self._metric_steps[key] += 1
        self._metric_steps["all"] += 1
        self._lmbda_sum += lmbda
        return batches, count

    # ------------------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        obj = self.runner.objective(model, inputs, num_items_in_batch, on_policy=self._step_on_policy)
        if model.training:
            for name, value in obj.terms.items():
                self._metric_sums[name] += value.to(self.args.device)
            split = "loss_on_policy" if self._step_on_policy else "loss_off_policy"
            self._metric_sums[split] += obj.loss.detach().to(self.args.device)
            if self.lmbda.adaptive:
                part = distillation_signal(obj).to(self.args.device)
                self._step_signal = part if self._step_signal is None else self._step_signal + part
        # DDP averages gradients over processes; the global count already covers them all.
        loss = obj.loss * self.accelerator.num_processes
        return (loss, {"loss": obj.loss.detach()}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metric_steps.get("all"):
            names = sorted(self._metric_sums)
            stacked = torch.stack([self._metric_sums[n] for n in names]) if names else None
            if stacked is not None and self.accelerator.num_processes > 1:
                stacked = self.accelerator.reduce(stacked, reduction="sum")
            for n, v in zip(names, stacked.tolist() if stacked is not None else []):
                key = {"loss_on_policy": "on_policy", "loss_off_policy": "off_policy"}.get(n, "all")
                if self._metric_steps.get(key):
                    logs[n if n.startswith("loss_") else f"loss_{n}"] = v / self._metric_steps[key]
            logs["on_policy_fraction"] = self._metric_steps.get("on_policy", 0) / self._metric_steps["all"]
            logs["lmbda"] = self._lmbda_sum / self._metric_steps["all"]  # the scheduled λ, mean over the steps
            self._lmbda_sum = 0.0
            logs["target_tokens"] = self.state.num_input_tokens_seen
            self._metric_sums.clear()
            self._metric_steps.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        metrics = self.validation_metrics(metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    @torch.no_grad()
    def validation_metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Student and teacher validation CE (nats / target token) and bits per byte of the completions."""
        data = self.eval_data
        if data is None:
            return {}
        dl = self.get_eval_dataloader(data)
        model = self.model
        was_training = model.training
        model.eval()
        chunk = self.dcfg.loss.chunk_tokens
        rows: dict[str, list[torch.Tensor]] = defaultdict(list)
        w, b, scale = head_info(model)
        for batch in dl:
            batch = self._prepare_inputs(batch)
            h = hidden_states(model, batch)
            rows["s_ce"].append(per_row_ce(h, w, b, scale, len(self.student_tok), batch["labels"], chunk))
            _, m = shift_targets(batch["labels"])
            rows["s_n"].append(m.sum(1).float())
            items = [data.items[int(i)] for i in batch["example_index"].tolist()]
            nbytes = [completion_bytes(it.student) for it in items]
            rows["bytes"].append(torch.tensor(nbytes, dtype=torch.float32, device=h.device))
            if self.teacher is not None:
                tb = split_teacher(batch) or batch
                th = self.runner.teacher_forward(tb, logits=False)
                tw, tbias, tscale = head_info(self.teacher)
                ce = per_row_ce(th, tw, tbias, tscale, len(self.teacher_tok), tb["labels"].to(th.device), chunk)
                rows["t_ce"].append(ce.to(h.device))
                rows["t_n"].append(shift_targets(tb["labels"])[1].sum(1).float().to(h.device))
        model.train(was_training)
        tot = {k: float(self.accelerator.gather_for_metrics(torch.cat(v)).sum()) for k, v in rows.items()}
        nbytes = max(tot["bytes"], 1.0)  # bits_per_byte refuses 0 bytes; validation must still log a number
        out = {f"{prefix}_student_loss": tot["s_ce"] / max(tot["s_n"], 1.0),
               f"{prefix}_student_bpb": bits_per_byte(tot["s_ce"], nbytes)}
        if "t_ce" in tot:
            out[f"{prefix}_teacher_loss"] = tot["t_ce"] / max(tot["t_n"], 1.0)
            out[f"{prefix}_teacher_bpb"] = bits_per_byte(tot["t_ce"], nbytes)
        out[f"{prefix}_loss"] = out[f"{prefix}_student_loss"]
        return out
