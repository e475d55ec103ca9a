"""securefl in Flower: secure aggregation for Flower apps by changing a few lines.

Message API::

    from securefl.integrations.flower import SecureFedAvg, securefl_mod
    strategy = SecureFedAvg("secagg", federation="federation.json")   # instead of FedAvg(...)
    app = ClientApp(mods=[securefl_mod])

Legacy API::

    workflow = DefaultWorkflow(fit_workflow=SecureAggregationWorkflow("secagg", federation="federation.json"))
    app = ClientApp(client_fn=client_fn, mods=[securefl_mod])

Nodes take their identity file and pins (the federation file, which pins the aggregator's and
the key-holder's keys) from their node config (`node.py`). For HE schemes the key-holder stays a separate securefl
service (`securefl keyholder serve`) the ServerApp reaches over mutual TLS as the federation's
aggregator."""

from .mod import PlainTrainingRefused, securefl_mod
from .strategy import SecureFedAvg
from .workflow import SecureAggregationWorkflow

__all__ = ["PlainTrainingRefused", "SecureAggregationWorkflow", "SecureFedAvg", "securefl_mod"]
