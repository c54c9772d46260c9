"""TensorFlow sides: Keras models (``.keras`` files, SavedModel folders) and TFLite models run with LiteRT.

Imported lazily (``from diffcore.capture.tf import KerasRunner``): ``import diffcore`` loads no TensorFlow.
"""
from .keras import KerasRunner, SavedModelRunner, open_tf_model
from .tflite import TfliteRunner

__all__ = ["KerasRunner", "SavedModelRunner", "TfliteRunner", "open_tf_model"]
