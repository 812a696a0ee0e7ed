"""Triton ensemble stage of the scoring graph (gateway -> filter -> feature service -> Triton ensemble).

`repository` writes the Triton model repository (GBT + sequence model + combiner behind one ensemble),
`triton` starts the tritonserver binary bundled with nvidia-pytriton for the local CPU target.
"""
