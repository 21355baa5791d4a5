# Types for the part of nagiosplugin (1.3.2 - 1.4) that checks/ uses; the library ships
# none. Only what we call is declared, so a use of anything else fails the type check
# and gets declared here after a look at the library's source. tests/unit/test_typings.py
# holds these to the installed library (mypy's stubtest); @disjoint_base marks the classes
# that are namedtuples there.
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeAlias

from typing_extensions import Self, disjoint_base

from . import state as state
from .state import Critical as Critical
from .state import Ok as Ok
from .state import ServiceState
from .state import Unknown as Unknown
from .state import Warn as Warn

@disjoint_base
class Range(tuple[bool, float, float]):
    # "[@][start:][end]"; an int or float spec means 0:spec; a float may be inf
    def __new__(cls, spec: Range | str | float | None = "") -> Self: ...
    @property
    def invert(self) -> bool: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    def match(self, value: float) -> bool: ...
    @property
    def violation(self) -> str: ...

@disjoint_base
class Metric(tuple[Any, ...]):
    def __new__(
        cls,
        name: str,
        # nagiosplugin takes any value: most are numbers, a few of ours are words (a
        # slot's wal_status); the context that judges the metric knows which
        value: Any,
        uom: str | None = None,
        min: float | None = None,
        max: float | None = None,
        context: str | None = None,
        contextobj: Context | None = None,
        resource: Resource | None = None,
    ) -> Self: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> Any: ...
    @property
    def uom(self) -> str | None: ...
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...
    @property
    def context(self) -> str: ...  # the metric's name when none was given
    @property
    def contextobj(self) -> Context | None: ...
    # The resource that yielded the metric (set by Check): a context reads its own
    # resource's facts from it, so its type is that resource's, which only the context knows.
    @property
    def resource(self) -> Any: ...
    @property
    def description(self) -> str | None: ...
    @property
    def valueunit(self) -> str: ...
    def replace(self, **attr: Any) -> Metric: ...

@disjoint_base
class Performance(tuple[Any, ...]):
    def __new__(
        cls,
        label: str,
        value: Any,
        uom: str | None = "",
        warn: Range | str | None = "",
        crit: Range | str | None = "",
        min: float | str | None = "",
        max: float | str | None = "",
    ) -> Self: ...
    @property
    def label(self) -> str: ...
    @property
    def value(self) -> Any: ...

@disjoint_base
class Result(tuple[Any, ...]):
    def __new__(
        cls, state: ServiceState, hint: str | None = None, metric: Metric | None = None
    ) -> Self: ...
    @property
    def state(self) -> ServiceState: ...
    @property
    def hint(self) -> str | None: ...
    @property
    def metric(self) -> Metric | None: ...

class Results:
    results: list[Result]
    by_state: dict[ServiceState, list[Result]]
    by_name: dict[str, Result]
    def __init__(self, *results: Result) -> None: ...
    def add(self, *results: Result) -> Self: ...
    # worst state first
    def __iter__(self) -> Iterator[Result]: ...
    def __len__(self) -> int: ...
    def __getitem__(self, item: int | str) -> Result: ...
    def __contains__(self, name: str) -> bool: ...
    @property
    def most_significant_state(self) -> ServiceState: ...
    @property
    def most_significant(self) -> list[Result]: ...
    @property
    def first_significant(self) -> Result: ...

class Resource:
    @property
    def name(self) -> str: ...
    def probe(self) -> Iterable[Metric] | Metric: ...

class Context:
    name: str
    fmt_metric: str | Callable[[Metric, Context], str | None] | None
    result_cls: type[Result]
    def __init__(
        self,
        name: str,
        fmt_metric: str | Callable[[Metric, Context], str | None] | None = None,
        result_cls: type[Result] = ...,
    ) -> None: ...
    # ``resource`` is the one that yielded the metric, of whatever type that is
    def evaluate(self, metric: Metric, resource: Any) -> Result | ServiceState: ...
    def performance(self, metric: Metric, resource: Any) -> Performance | None: ...
    def describe(self, metric: Metric) -> str | None: ...

class ScalarContext(Context):
    warning: Range
    critical: Range
    def __init__(
        self,
        name: str,
        warning: Range | str | float | None = None,
        critical: Range | str | float | None = None,
        fmt_metric: str | Callable[[Metric, Context], str | None] | None = ...,
        result_cls: type[Result] = ...,
    ) -> None: ...
    def evaluate(self, metric: Metric, resource: Any) -> Result: ...

class Summary:
    def ok(self, results: Results) -> str: ...
    def problem(self, results: Results) -> str: ...
    def verbose(self, results: Results) -> list[str]: ...
    def empty(self) -> str: ...

# what Check() and Check.add() sort into resources, contexts, the summary and results
_CheckPart: TypeAlias = Resource | Context | Summary | Results

class Check:
    resources: list[Resource]
    summary: Summary
    results: Results
    perfdata: list[str]  # rendered perfdata, one entry per metric ("" for none)
    name: str
    def __init__(self, *objects: _CheckPart) -> None: ...
    def add(self, *objects: _CheckPart) -> Self: ...
    def __call__(self) -> None: ...
    @property
    def state(self) -> ServiceState: ...
    @property
    def exitcode(self) -> int: ...
