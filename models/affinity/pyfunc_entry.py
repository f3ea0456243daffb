"""MLflow models-from-code entry point: the file MLflow stores and runs to build the model."""

import mlflow.models

from models.affinity.pyfunc import AffinityPyfunc

mlflow.models.set_model(AffinityPyfunc())
