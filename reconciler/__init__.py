"""The GitOps reconciler: fetch, verify, load, decrypt, plan and apply, one stage a module.

Never imports `webhook`; the two components share nothing but the policies and the chart.
"""
