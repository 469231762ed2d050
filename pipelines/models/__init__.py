"""TensorFlow implementations of pretrained models (all-MiniLM-L6-v2) and their tokenizers."""
