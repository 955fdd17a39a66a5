"""Test kits for code that plugs into mqnas: pytest base classes whose tests are a contract.

- `nas.testing.strategies.StrategyTestCase`: every ask/tell `Strategy` (valid asks,
  determinism, JSON state, failed and foreign tells, constraints, infeasible tells);
- `nas.testing.spaces.SpaceConformance` / `SupernetConformance`: every registered space
  (samples, freezing, specs) and its supernet (extraction, activation, export).

Subclass one in a test module under a name starting with ``Test`` and pytest runs its
tests against your component. The kits need pytest; `import nas` never loads them, so
import the submodules themselves (this package imports nothing).
"""
