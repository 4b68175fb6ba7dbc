"""The Training section of an e5 head's model card: its runs, stages and soups, each with the
command that repeats it (tools/model_card_e5.py writes the rest of the card)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_card import ROOT, pct


def layers_kept(layers: int | None) -> str:
    if layers in (None, 0, 12):
        return "all 12 encoder layers"
    return f"the first {layers} of the 12 encoder layers kept"


OTHER_DEFAULTS = {  # train_e5_heads.py's numeric flags the card names only when changed
    "max_len": 128,
    "dropout": 0.1,
    "weight_decay": 0.01,
    "warmup": 0.06,
    "clip": 1.0,
    "llrd": 1.0,
    "label_smoothing": 0.0,
    "rdrop": 0.0,
}


def train_flags(hp: dict[str, Any]) -> str:
    """The train_e5_heads.py flags that differ from its defaults (base, layers and epochs always)."""
    flags = []
    base = str(hp.get("base") or "")
    if base and Path(base).name != "zh-en":
        flags.append(f"--base {repo_path(Path(base))}")
    if str(hp.get("device") or "cpu") != "cpu":
        flags.append(f"--device {hp['device']}")
    flags += [f"--layers {hp.get('layers')}", f"--epochs {hp.get('epochs')}"]
    if hp.get("batch_size") not in (None, 32):
        flags.append(f"--batch-size {hp['batch_size']}")
    if hp.get("freeze_embeddings"):
        flags.append("--freeze-embeddings")
    if hp.get("lr") not in (None, 1e-4):
        flags.append(f"--lr {hp.get('lr'):g}")
    for key, default in OTHER_DEFAULTS.items():
        if hp.get(key) not in (None, default):
            flags.append(f"--{key.replace('_', '-')} {hp[key]:g}")
    if hp.get("crf"):
        flags.append("--crf")
        if hp.get("crf_lr") not in (None, 1e-2):
            flags.append(f"--crf-lr {hp.get('crf_lr'):g}")
    if hp.get("seed") not in (None, 42):
        flags.append(f"--seed {hp.get('seed')} --split-seed {hp.get('split_seed', hp.get('seed'))}")
    if hp.get("exclude_train"):  # label-noise lists (tools/ensemble_e5_heads.py --flag-train)
        flags.append("--exclude-train " + " ".join(repo_path(Path(f)) for f in hp["exclude_train"]))
    if hp.get("hold_out_fold"):
        flags.append(f"--hold-out-fold {hp['hold_out_fold']}")
    if hp.get("train_on_dev"):
        flags.append("--train-on-dev")
    if hp.get("pooling") == "mean":
        flags.append("--pooling mean")
    return " ".join(flags)


def where_trained(hp: dict[str, Any]) -> str:
    """The machine a run's hparams say it trained on."""
    if str(hp.get("device") or "cpu").startswith("cuda"):
        return (
            f"a GPU (`--device {hp['device']}`; the checkpoint came back through "
            "tools/gpu_e5_heads.py as fp16 differences from its base, its rebuild error in "
            "gpu_transfer.json; tools/README-training.md names the machine)"
        )
    return "a 2-core CPU"


STAGES = {2: "Two", 3: "Three", 4: "Four", 5: "Five", 6: "Six", 7: "Seven", 8: "Eight", 9: "Nine"}


def base_lines(
    base: dict[str, Any] | None,
    task: str,
    earlier: list[dict[str, Any]] | None = None,
    soup_below: bool = False,
) -> list[str]:
    """Runs that started from other runs of this tool (not the import, not a shipped model):
    every earlier stage, first first (`earlier`, from bundle.json's earlier_stages; older
    bundles name only the last one, `base`), then the run or soup below."""
    stages = stage_list(base, earlier)
    if not stages or any(s.get("soup") or not s.get("hparams") for s in stages):
        return []
    n = len(stages)
    lines = [
        f"- {STAGES.get(n + 1, str(n + 1))} stages, each from the best checkpoint of the one before."
    ]
    for i, stage in enumerate(stages, 1):
        hp = stage["hparams"]
        trained = (
            "every weight but the word-embedding table trained"
            if hp.get("freeze_embeddings")
            else "every weight trained"
        )
        lines.append(
            f"- Stage {i} (`{stage['dir']}`): {layers_kept(hp.get('layers'))}, {trained}, on "
            f"{where_trained(hp)}: {stage.get('train_minutes')} minutes, {stage.get('epoch')} "
            f"epochs, batch {hp.get('batch_size')}, AdamW lr {hp.get('lr')}, seed "
            f"{hp.get('seed')}; `python tools/train_e5_heads.py {task} --workdir "
            f".cache/train/{stage['dir']} {train_flags(hp)}`."
        )
    lines.append(
        f"- Stage {n + 1} is the weight average below: its members trained from stage {n} or are "
        f"stage {n} itself."
        if soup_below
        else f"- Stage {n + 1} is the run below, from stage {n}'s best checkpoint."
    )
    return lines


def stage_list(
    base: dict[str, Any] | None, earlier: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """The earlier stages, first first: bundle.json's earlier_stages, or for a bundle from before
    it, the one base_training it names."""
    return earlier or ([base] if base else [])


def table_stages(bundle: dict[str, Any], stages: list[dict[str, Any]] | None = None) -> list[int]:
    """The earlier stages (numbered from 1) that trained the word-embedding table; `stages`, when
    the caller has them, is stage_list of the bundle."""
    if stages is None:
        stages = stage_list(bundle.get("base_training"), bundle.get("earlier_stages"))
    return [
        i
        for i, stage in enumerate(stages, 1)
        if not stage.get("hparams", {}).get("freeze_embeddings")
    ]


def repo_path(path: Path) -> str:
    """A directory as the training command names it: relative to the repository root."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return f".cache/e5/{path.name}"


def continued_lines(
    cont: dict[str, Any] | None, task: str, name: str, base: dict[str, Any] | None = None
) -> list[str]:
    """Training in stages: the first stage's model, rebuilt from its shipped int8 weights; then
    the run below, or (`base`: a soup of second-stage checkpoints) a soup and then the run below."""
    if not cont:
        return []
    if base and base.get("soup"):
        later = [
            f"Stage 2 is a weight average of second-stage checkpoints, `{base['dir']}`:",
            *soup_lines(base["soup"], task, then_export=False),
            f"- Stage 3, below, starts from `{base['dir']}`.",
        ]
    else:
        later = ["Stage 2 is the run below."]
    src_hp, src_train, check = cont["hparams"], cont["training"], cont["rebuild_check"]
    stages = "Three" if base and base.get("soup") else "Two"
    return [
        f"- {stages} stages. Stage 1: {layers_kept(src_hp.get('layers'))} fine-tuned for "
        f"{src_hp.get('epochs')} epochs (AdamW lr {src_hp.get('lr')}, "
        f"{src_train.get('train_minutes')} minutes; shipped as `{name}` at commit "
        f"{cont['commit'][:7]}: {cont['summary']}). Its fp32 checkpoint stayed on the machine "
        "that trained it, so stage 2 starts from the weights shipped in git: "
        f"`python tools/onnx_to_hf.py src/ernie_deploy/models/{name} "
        f".cache/e5/{cont['rebuilt_dir']}` (at that commit) dequantizes them into a "
        "transformers directory (its logits agree with stage 1's fp32 checkpoint on the probe "
        f"batch: argmax {check['argmax_agreement_vs_fp32_checkpoint']:.2%}, max abs diff "
        f"{check['max_abs_diff_vs_fp32_checkpoint']:.3g}). " + later[0],
        *later[1:],
    ]


def run_lines(hp: dict[str, Any], train: dict[str, Any], task: str, workdir: str) -> list[str]:
    """One training run, its shipped checkpoint and its command."""
    return [
        f"- PyTorch on {where_trained(hp)}: {train.get('train_minutes')} minutes, "
        f"{train.get('epoch')} epochs (step {train.get('step')}), batch {hp.get('batch_size')}, max "
        f"{hp.get('max_len')} pieces, AdamW lr {hp.get('lr')}, weight decay "
        f"{hp.get('weight_decay')}, clip {hp.get('clip')}, {hp.get('warmup')} warmup + linear "
        f"decay over {hp.get('epochs')} epochs, dropout {hp.get('dropout')}, seed "
        f"{hp.get('seed')}.",
        f"- Shipped checkpoint: step {train.get('step')} (epoch {train.get('epoch')}), the best "
        "score on a 1,000-example dev split of the training data (ties keep the earlier one); "
        "the held-out / test column of the curve below was not used to choose.",
        f"- Command: `python tools/train_e5_heads.py {task} --workdir .cache/train/{workdir} "
        + train_flags(hp)
        + "` (re-running it resumes from "
        f"the latest checkpoint), then `python tools/export_e5_heads.py {task} --checkpoint "
        f".cache/train/{workdir}/best`.",
    ]


def ingredient_workdir(ing: dict[str, Any]) -> tuple[str | None, str]:
    """A soup member's training workdir under .cache/train and its label: from the directory it
    was read from here (a run's best/ or final/, or a checkpoint directory of its own, such as one
    rebuilt from a GPU's differences), else from the workdir its run recorded."""
    if ing.get("dir"):
        path = Path(ing["dir"])
        if path.name in ("best", "final"):
            return path.parent.name, f"{path.parent.name}/{path.name}"
        return path.name, path.name
    return ing.get("workdir"), f"{ing.get('workdir')}/{ing.get('checkpoint')}"


def soup_lines(
    soup: dict[str, Any],
    task: str,
    then_export: bool = True,
    stage_dirs: frozenset[str] = frozenset(),
) -> list[str]:
    """A soup (tools/soup_e5_heads.py): which checkpoints were averaged, chosen how. The commands
    of runs in `stage_dirs` are given by their stage lines above, so they are not repeated."""
    rows, runs = [], {}
    on_dev = " (trained on)" if soup.get("dev_trained_on") else ""
    for ing in soup["ingredients"]:
        hp = ing.get("hparams", {})
        workdir, label = ingredient_workdir(ing)
        if workdir and workdir not in stage_dirs:
            runs.setdefault(workdir, hp)
        where = (
            f"the shipped `{ing['rebuilt_from']}` rebuilt by tools/onnx_to_hf.py"
            if ing.get("rebuilt_from")
            else f"`{label}`"
        )
        rows.append(
            f"  - {where}: {layers_kept(hp.get('layers'))}, seed {ing.get('seed')}, epoch "
            f"{ing.get('epoch')} of {ing.get('epochs_planned')} (AdamW lr {hp.get('lr')}, batch "
            f"{hp.get('batch_size')}, max {hp.get('max_len')} pieces, {hp.get('warmup')} warmup + "
            f"linear decay, dropout {hp.get('dropout')}; {ing.get('train_minutes')} minutes on "
            f"{where_trained(hp)}), dev {pct(ing['dev'])}{on_dev}"
        )
    chosen = (
        f"Rule: {soup['rule']}: the members trained on the dev split too (`--train-on-dev`), so "
        f"no split chose among them (dev, trained on, scores {pct(soup['dev'])}). Ingredients:"
        if soup.get("dev_trained_on")
        else f"Rule: {soup['rule']}; the soup scores {pct(soup['dev'])} on the 1,000-example dev "
        f"split of the training data (uniform average of all candidates: "
        f"{pct(soup['uniform_dev'])}), and the held-out / test split took no part in the choice. "
        "Ingredients:"
    )
    commands = [
        f"`python tools/train_e5_heads.py {task} --workdir .cache/train/{wd} {train_flags(hp)}`"
        for wd, hp in runs.items()
    ]
    return [
        '- A weight average ("model soup") of fine-tuned checkpoints that all started from the '
        "same weights, with the same recipe but for the seed and the number of epochs. " + chosen,
        *rows,
        f"- Candidates and their dev scores{on_dev}: "
        + ", ".join(
            f"`{Path(m).parent.name}/{Path(m).name}` {pct(d)}"
            for m, d in soup["members_dev"].items()
        )
        + ".",
        "- Commands: "
        + (", ".join(commands) + ", then " if commands else "those of the stages above, then ")
        + f"`{soup['command']}`"
        + (
            f", then `python tools/export_e5_heads.py {task} --checkpoint <soup>`."
            if then_export
            else "."
        ),
    ]
