"""Conversion: paddle2onnx, Hugging Face export, graph optimisation, int8 (needs the [paddle]/[hf] extras).

Imported lazily by the CLI; nothing here is loaded by `import ernie_deploy`.
"""
