"""Python-backend model files copied by `services.ensemble.repository` to `<model>/<version>/model.py`.

They run inside Triton's Python backend stub (last stage of the scoring graph), never inside the service
processes, so importing them here fails on purpose: `triton_python_backend_utils` only exists in the stub.
The package exists so that the files ship with the wheel.
"""
