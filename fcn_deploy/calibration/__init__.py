"""Precision lowering: calibration images, per-tensor ranges and their cache, INT8 Q/DQ, FP16, held-out summary.

Public entry point: `from fcn_deploy.calibration.api import QuantizeConfig, quantize`.
"""
