"""The validating admission webhook: Flask app, OPA-backed decisions, serving settings.

Never imports `reconciler`; the two components share nothing but the policies and the chart.
"""
