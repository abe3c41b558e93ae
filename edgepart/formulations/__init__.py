"""Exact models of the pipeline-partition problem, built once, decoded back into a Plan.

A formulation never calls a solver; a solver backend never sees layers
(see ``docs/formulations.md``).
"""
