#!/usr/bin/env python
"""The ERNIE 3.0 deployment guide's infer.py, backed by ernie-deploy.

python infer.py --task_name token_cls --model_path ner_model.onnx [--use_fp16]
python infer.py --task_name seq_cls --model_path tnews_model.onnx [--use_fp16]
"""

import os
import sys

os.environ.setdefault("AISTUDIO_BOS_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from ernie_deploy.cli.infer import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
