"""MLflow models-from-code entry point: the file MLflow stores and runs to build the model."""

import mlflow.models

from models.uplift.pyfunc import UpliftPyfunc

mlflow.models.set_model(UpliftPyfunc())
