"""Codecs of the served protocols: keel's /v1, MLflow's /invocations and the Open Inference Protocol v2.

Each turns a request body into columns for :class:`keel.serving.Predictor` and a
:class:`~keel.serving.predictor.Prediction` into that protocol's response; the
predictor does everything else.
"""
