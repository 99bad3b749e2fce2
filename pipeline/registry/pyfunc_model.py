"""Models-from-code entry for the variant pyfunc: MLflow runs this file to build the model (no pickled object)."""

from mlflow.models import set_model

from pipeline.registry.pyfunc import VariantModel

set_model(VariantModel())
