"""The update a user's train function returns, as the flat named arrays securefl protects, and
the average back as Flower records.

Everything numeric the node reports travels protected: the arrays, and the training metrics
beside them (FedAvg averages those weighted by the same weight), under the scheme's bounds
(secagg clips every value to its `value_bound`; HE refuses values beyond its range). The weight
(`num-examples`) is the weight of the protected sum; nothing else of the reply leaves the node.
Non-numeric legacy metrics (strings, bytes, booleans) cannot be averaged and are dropped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.common import Code, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.typing import Parameters
from flwr.compat.common import recorddict_compat as compat

from ...errors import InvalidInput
from ...tensors import check_weight
from .wire import LEGACY_LAYOUT

ARRAYS, METRICS = "arrays/", "metrics/"


def named_update(content: RecordDict, layout: str, weight_key: str) -> tuple[dict[str, np.ndarray], float]:
    """The arrays and numeric metrics of a train reply, by name, and its weight."""
    if layout == LEGACY_LAYOUT:
        return _legacy_update(content)
    arrays, metrics = list(content.array_records.values()), list(content.metric_records.values())
    if len(arrays) != 1 or len(metrics) != 1:
        raise InvalidInput("the train function must reply with exactly one ArrayRecord and one MetricRecord, as "
                           "for FedAvg")
    if weight_key not in metrics[0]:
        raise InvalidInput(f"the train function's MetricRecord lacks the weight {weight_key!r}")
    named = {ARRAYS + key: array.numpy() for key, array in arrays[0].items()}
    named.update({METRICS + key: np.asarray(value, dtype=np.float64)
                  for key, value in metrics[0].items() if key != weight_key})
    return named, check_weight(metrics[0][weight_key])


def _legacy_update(content: RecordDict) -> tuple[dict[str, np.ndarray], float]:
    fitres = compat.recorddict_to_fitres(content, keep_input=True)
    if fitres.status.code != Code.OK:
        raise InvalidInput(f"the client's fit failed: {fitres.status.message:.200}")
    named = {f"{ARRAYS}{i}": array for i, array in enumerate(parameters_to_ndarrays(fitres.parameters))}
    named.update({METRICS + key: np.asarray(value, dtype=np.float64) for key, value in fitres.metrics.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool)})
    return named, check_weight(fitres.num_examples)


@dataclass(frozen=True)
class Average:
    """A round's revealed weighted average, by name, and what little the round reveals besides."""

    named: Mapping[str, np.ndarray]
    total_weight: float
    contributors: int

    def array_record(self) -> ArrayRecord:
        return ArrayRecord({key[len(ARRAYS):]: Array(np.ascontiguousarray(value))
                            for key, value in self.named.items() if key.startswith(ARRAYS)})

    def metrics(self) -> dict[str, float | list[float]]:
        return {key[len(METRICS):]: value.tolist() for key, value in self.named.items() if key.startswith(METRICS)}

    def metric_record(self) -> MetricRecord:
        return MetricRecord(self.metrics())

    def parameters(self) -> Parameters:
        return ndarrays_to_parameters([value for key, value in self.named.items() if key.startswith(ARRAYS)])
