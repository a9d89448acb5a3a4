#!/usr/bin/env bash
# Fine-tune the earlier quality model (scripts/train_default_model.sh) to read photons: with the
# estimated photon scale, on its own training frames plus frames whose brightness and quality
# part ways (`dataset synth --variants`). This is the experiment reported in
# models/MODEL_CARD.md ("Photons, not brightness"); the shipped file is not this run's output
# but the earlier weights with the photon scale set (see the model card).
#
#   scripts/finetune_photon_model.sh INIT_MODEL [WORK_DIR]
#
# INIT_MODEL: the model scripts/train_default_model.sh wrote (sha256 99decd79379f...).
# WORK_DIR (default /tmp/stedloop-quality) must hold that run's actin/ and tubulin/ data sets;
# nothing here is committed. ~1 h on 2 CPU cores.
set -euo pipefail
INIT="$1"
WORK="${2:-/tmp/stedloop-quality}"
EPOCHS="${EPOCHS:-10}"

# 1. Frames with variants: 1,200 new actin frames (other samples, seed 3), one variant each.
[ -f "$WORK/mixed/manifest.csv" ] || \
    stedloop dataset synth --out "$WORK/mixed" --n 1200 --variants 1 --structure actin --seed 3

# 2. One folder: the init model's own training split (its validation and test frames left out,
#    so its test figures stay comparable) and the frames with variants, hard-linked.
python - "$INIT" "$WORK" <<'EOF'
import csv, os, sys
from pathlib import Path

import torch

from stedloop.quality.dataset import write_manifest

init, work = sys.argv[1], Path(sys.argv[2])
training = torch.load(init, weights_only=True)["training"]
held_out = {Path(p).name for p in training["test_paths"] + training["val_paths"]}
out = work / "union"
out.mkdir(exist_ok=True)
rows = []
for prefix, folder in (("a", work / "actin"), ("m", work / "mixed")):
    for row in csv.DictReader(open(folder / "manifest.csv")):
        if prefix == "a" and row["path"] in held_out:
            continue
        name = f"{prefix}_{row['path']}"
        if not (out / name).exists():
            os.link(folder / row["path"], out / name)
        row = {k: v for k, v in row.items() if v != ""}
        row["path"] = name
        if row.get("parent"):
            row["parent"] = f"{prefix}_{row['parent']}"
        rows.append(row)
write_manifest(out, rows)
print(f"{out}: {len(rows)} frames")
# The init's actin test frames on their own, to compare both models on the same 200 frames.
test_names = {Path(p).name for p in training["test_paths"]}
test_dir = work / "actin_test"
test_dir.mkdir(exist_ok=True)
test_rows = [r for r in csv.DictReader(open(work / "actin" / "manifest.csv")) if r["path"] in test_names]
for row in test_rows:
    if not (test_dir / row["path"]).exists():
        os.link(work / "actin" / row["path"], test_dir / row["path"])
write_manifest(test_dir, test_rows)
EOF

# 3. Fine-tuning: from INIT, photon scale estimated (input mean/std recomputed), lr 0.0005,
#    step decay after 3 epochs without validation gain, at most $EPOCHS epochs.
stedloop train "$WORK/union" --init "$INIT" --photon-scale estimated --out "$WORK/photon.pt" \
    --seed 0 --epochs "$EPOCHS" --lr 0.0005 --lr-drop-patience 3 --val-fraction 0.1 \
    --test-fraction 0.1 --precision bf16 --threads 2

# 4. Evaluation: the init's actin test split and the unseen tubulin set, then the real
#    degradation series when present.
stedloop evaluate "$WORK/photon.pt" "$WORK/actin_test" --out "$WORK/eval_photon_actin_test"
stedloop evaluate "$WORK/photon.pt" "$WORK/tubulin" --out "$WORK/eval_photon_tubulin"
[ -d ../shared/data/real_sted/degradations ] && \
    stedloop evaluate-degradations ../shared/data/real_sted/degradations --model "$WORK/photon.pt"
