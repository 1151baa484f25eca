"""Embedding: the inference encoder, dataset roles (cached, across processes), new specimens."""
