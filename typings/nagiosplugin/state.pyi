# The outcome states: four singleton instances, ordered by ``code`` (exit code).
from typing import NamedTuple

from typing_extensions import disjoint_base

@disjoint_base
class ServiceState(NamedTuple):
    code: int
    text: str
    def __int__(self) -> int: ...

Ok: ServiceState
Warn: ServiceState
Critical: ServiceState
Unknown: ServiceState
