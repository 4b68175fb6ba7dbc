#!/usr/bin/env python
"""Average fine-tuned e5 heads of one shape into a "model soup", chosen on the dev split only.

    python tools/soup_e5_heads.py sentiment --out .cache/train/soup \
        --members .cache/train/e5-sent-11-s43/best .cache/train/e5-sent-11-s44/best ...

Members are transformers directories of one architecture and depth that started from the same
pretrained encoder (train_e5_heads.py's best/ or final/, or onnx_to_hf.py's rebuild of a
shipped model). Every member, their uniform average and the greedy soup (Wortsman et al.,
2022: members in order of dev score, each kept only if the average's dev score does not drop)
are scored on the dev split that train_e5_heads.py holds out of TRAIN (split seed 42, as the
shipped heads). The greedy soup is written to --out (a save_pretrained directory that
export_e5_heads.py --checkpoint takes) with soup_info.json (the written soup under "written"
since the fourteenth session, "greedy" before); it is never worse on dev than the
best member, and no other split takes part in the choice. --report adds the held-out / test
scores of every candidate to soup_info.json, for the record only.

--uniform writes the uniform average of every member instead, a rule fixed before any score is
seen. Members trained with train_e5_heads.py --train-on-dev have learnt the dev split, so dev
cannot choose among them: they need --uniform (dev is still scored, for the record).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

from e5_bundle import trained_prompt  # noqa: E402

CRF_FILE = "crf_transitions.npy"  # tools/crf_torch.py: a --crf run's tables, averaged too
CRF_KEY = "crf::"


def load_member(member: Path) -> dict:
    """The member's weights, and its CRF tables under CRF_KEY names when it has them."""
    import torch
    from crf_torch import load_tables
    from safetensors.torch import load_file

    state = load_file(str(member / "model.safetensors"))
    tables = load_tables(member)
    if tables is not None:
        for key, values in zip(("transitions", "start", "end"), tables):
            state[CRF_KEY + key] = torch.from_numpy(np.asarray(values, dtype=np.float32))
    return state


def check_members(members: list[Path]) -> str | None:
    """One sentence saying why these directories cannot be averaged, or None."""
    first = None
    for m in members:
        if not (m / "config.json").is_file() or not (m / "model.safetensors").is_file():
            return f"{m} holds no config.json + model.safetensors: pass best/, final/ or an onnx_to_hf.py output."
        cfg = json.loads((m / "config.json").read_text("utf-8"))
        shape = (
            (cfg.get("architectures") or [""])[0],
            cfg.get("num_hidden_layers"),
            cfg.get("vocab_size"),
            cfg.get("num_labels", len(cfg.get("id2label", {}))),
            (m / "tokenizer.json").read_bytes() if (m / "tokenizer.json").is_file() else b"",
            (m / CRF_FILE).is_file(),
            cfg.get("classifier_pooling") or "cls",  # train_e5_heads.py --pooling
            trained_prompt(m),  # --prompt: the members must have read the same inputs
        )
        if first is None:
            first = (m, shape)
        elif shape != first[1]:
            return (
                f"{m} differs from {first[0]} in architecture, depth, vocabulary, labels, "
                "tokenizer, CRF tables (train_e5_heads.py --crf), pooling (--pooling) or prompt "
                "(--prompt): soup only members of one shape."
            )
    return None


def provenance(member: Path) -> dict[str, Any]:
    """Where a member came from: its run's hparams and checkpoint, or the shipped model rebuilt."""
    info_file, rebuilt_file = member / "training_info.json", member / "rebuild_info.json"
    where: dict[str, Any] = {"dir": str(member)}
    if info_file.is_file():
        info = json.loads(info_file.read_text("utf-8"))
        hp, train = info.get("hparams", {}), info
        where |= {"workdir": Path(str(hp.get("workdir") or "")).name, "checkpoint": member.name}
    elif rebuilt_file.is_file():
        rebuilt = json.loads(rebuilt_file.read_text("utf-8"))
        src = member / "source_bundle.json"
        bundle = json.loads(src.read_text("utf-8")) if src.is_file() else {}
        hp, train = bundle.get("hparams", {}), bundle.get("training", {})
        where |= {
            "rebuilt_from": Path(rebuilt["rebuilt_from"]).name,
            "rebuild_check": rebuilt.get("check"),
        }
    else:
        return where
    return {
        **where,
        "seed": hp.get("seed"),
        "epochs_planned": hp.get("epochs"),
        **{k: train.get(k) for k in ("epoch", "step", "train_minutes")},
        "hparams": hp,
    }


def make_trainer(task: str, first: Path, data_file: Path | None, scratch: Path) -> Any:
    """train_e5_heads.py's trainer over `first` (its model, data and scoring), with `scratch` as
    its workdir; the data from a training workdir's data.pkl, or prepared into `scratch`."""
    from e5_run import load_data
    from e5_trainer import E5Trainer
    from train_e5_heads import parse_args as train_args

    targs = train_args(
        [task, "--workdir", str(scratch), "--base", str(first), "--layers", "0"]
        + (["--crf"] if (first / CRF_FILE).is_file() else [])
    )
    if data_file:
        with open(data_file, "rb") as f:
            data = pickle.load(f)
    else:  # the trainer's own preparation, cached in the scratch workdir only
        data = load_data(targs, scratch)
    return E5Trainer(targs, data)


def average(states: list[dict]) -> dict:
    out = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            out[k] = sum(s[k].float() for s in states) / len(states)
        else:
            out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    from e5_run import OneLineParser, number_arg

    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=("ner", "sentiment"))
    p.add_argument("--members", type=Path, nargs="+", required=True)
    p.add_argument(
        "--out", type=Path, required=True, help="the directory to write (must not exist)"
    )
    p.add_argument("--data", type=Path, help="a training workdir's data.pkl (split seed 42)")
    p.add_argument("--threads", type=number_arg(int, 1, low_ok=True), default=2)
    p.add_argument(
        "--report", action="store_true", help="also score held-out / test (not used to choose)"
    )
    p.add_argument(
        "--uniform",
        action="store_true",
        help="write the uniform average of every member, not the greedy soup on dev (members "
        "trained with --train-on-dev need it)",
    )
    a = p.parse_args(argv)
    if len(a.members) < 2:
        print("soup_e5_heads: pass at least two --members.", file=sys.stderr)
        return 2
    why = check_members(a.members)
    if why:
        print(f"soup_e5_heads: {why}", file=sys.stderr)
        return 2
    on_dev = [str(m) for m in a.members if provenance(m).get("hparams", {}).get("train_on_dev")]
    if on_dev and not a.uniform:
        print(
            f"soup_e5_heads: {', '.join(on_dev)} trained on the dev split, so dev cannot choose a "
            "greedy soup: pass --uniform.",
            file=sys.stderr,
        )
        return 2
    if a.out.exists():
        print(f"soup_e5_heads: {a.out} exists: pass a new --out.", file=sys.stderr)
        return 2
    if a.out.with_name(a.out.name + ".tmp").exists():
        print(
            f"soup_e5_heads: {a.out}.tmp exists (a stopped run's, or yours): remove it or pass "
            "another --out.",
            file=sys.stderr,
        )
        return 2
    if a.data and not a.data.is_file():
        print(
            f"soup_e5_heads: --data {a.data} is not a file: pass a training workdir's data.pkl.",
            file=sys.stderr,
        )
        return 2
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import torch

    torch.set_num_threads(a.threads)
    from e5_trainer import TOKENIZER_FILES

    t0 = time.time()
    scratch = tempfile.TemporaryDirectory()  # a workdir for the trainer's objects; thrown away
    trainer = make_trainer(a.task, a.members[0], a.data, Path(scratch.name))
    other = "test" if a.task == "ner" else "heldout"

    def load(state: dict) -> None:
        trainer.model.load_state_dict({k: v for k, v in state.items() if CRF_KEY not in k})
        if trainer.crf is not None:
            with torch.no_grad():
                for key in ("transitions", "start", "end"):
                    getattr(trainer.crf, key).copy_(state[CRF_KEY + key])

    def scores(state: dict, splits: tuple[str, ...]) -> dict[str, Any]:
        load(state)
        out = {}
        for split in splits:
            r = trainer.evaluate(split)
            out[split] = r["viterbi"]["f1"] if a.task == "ner" else r["accuracy"]
        return out

    splits = ("dev", other) if a.report else ("dev",)
    states = [load_member(m) for m in a.members]
    members = []
    for m, s in zip(a.members, states):
        members.append({"member": str(m), **scores(s, splits)})
        print(json.dumps(members[-1]), flush=True)
    uniform_state = average(states)
    uniform = {"soup": "uniform", **scores(uniform_state, splits)}
    print(json.dumps(uniform), flush=True)
    if a.uniform:  # the rule was fixed before any score was seen: nothing to choose
        kept, written_state = list(range(len(states))), uniform_state
        written = {**uniform, "ingredients": [str(m) for m in a.members]}
    else:
        order = sorted(range(len(states)), key=lambda i: -members[i]["dev"])  # ties keep order
        kept, best_dev = [order[0]], members[order[0]]["dev"]
        for i in order[1:]:
            dev = scores(average([states[j] for j in kept + [i]]), ("dev",))["dev"]
            print(
                json.dumps({"try": str(a.members[i]), "dev": dev, "kept_dev": best_dev}), flush=True
            )
            if dev >= best_dev:
                kept, best_dev = kept + [i], dev
        written_state = average([states[j] for j in kept])
        written = {
            "soup": "greedy",
            "ingredients": [str(a.members[j]) for j in kept],
            **scores(written_state, splits),
        }
    print(json.dumps(written), flush=True)

    load(written_state)
    tmp = a.out.with_name(a.out.name + ".tmp")
    trainer.model.save_pretrained(str(tmp))
    if trainer.crf is not None:
        from crf_torch import save_tables

        save_tables(trainer.crf.tables(), tmp)
    for name in TOKENIZER_FILES:
        if (a.members[0] / name).is_file():
            shutil.copy2(a.members[0] / name, tmp / name)
    rule = (
        "uniform average of every member (fixed before scoring)"
        if a.uniform
        else "greedy soup on dev (members by dev score; each kept if dev does not drop)"
    )
    info = {
        "rule": rule,
        "members": members,
        "uniform": uniform,
        "written": written,  # the soup in this directory: greedy, or uniform with --uniform
        "reported_not_chosen_on": other if a.report else None,
        "seconds": round(time.time() - t0, 1),
    }
    (tmp / "soup_info.json").write_text(json.dumps(info, indent=1), "utf-8")
    ingredients = [
        {**provenance(a.members[j]), "dev": members[j]["dev"]} for j in kept
    ]  # export_e5_heads.py reads this file for bundle.json and the card
    trained = [i for i in ingredients if "hparams" in i]
    training_info = {
        "step": None,
        "epoch": None,
        "train_minutes": round(sum(i.get("train_minutes") or 0 for i in ingredients), 1),
        "hparams": {**(trained[0]["hparams"] if trained else {}), "workdir": str(a.out)},
        "soup": {
            "rule": info["rule"],
            "dev": written["dev"],
            "uniform_dev": uniform["dev"],
            "dev_trained_on": bool(on_dev),
            "ingredients": ingredients,
            "members_dev": {m["member"]: m["dev"] for m in members},
            "command": "python tools/soup_e5_heads.py "
            + " ".join([a.task, "--members", *map(str, a.members), "--out", str(a.out)])
            + (" --uniform" if a.uniform else ""),
        },
    }
    (tmp / "training_info.json").write_text(json.dumps(training_info, indent=1), "utf-8")
    tmp.rename(a.out)
    scratch.cleanup()
    print(f"wrote {a.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
