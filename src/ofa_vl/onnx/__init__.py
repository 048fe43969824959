"""ONNX: ``export`` (two graphs in a model folder, ``export.py``) and the ONNX Runtime backend
(``runtime.py``) that the same decoding engine drives; ``graphs.py`` holds the networks.
Needs the ``onnx`` extra (onnx, onnxruntime, onnxscript), imported only when used."""
