"""Selection: which recipes a host can run, why not the others, and the best one."""

from __future__ import annotations

from dataclasses import dataclass

from cpubuild.host.detect import HostInfo
from cpubuild.recipes import Recipe, RecipeSet


@dataclass(frozen=True)
class Verdict:
    """Whether `host` can run `recipe`; when not, the required features it lacks, by kind."""

    recipe: Recipe
    missing: tuple[str, ...]  # required features the CPU does not have
    unusable: tuple[tuple[str, str], ...]  # (feature, reason): the CPU has it, the OS does not allow it

    @property
    def runnable(self) -> bool:
        return not self.missing and not self.unusable

    def why_not(self) -> str:
        """One sentence: empty when runnable."""
        parts = []
        if self.missing:
            parts.append(f"the CPU lacks {', '.join(self.missing)}")
        by_reason: dict[str, list[str]] = {}
        for feature, reason in self.unusable:
            by_reason.setdefault(reason, []).append(feature)
        for reason, features in by_reason.items():
            verb = "is" if len(features) == 1 else "are"
            parts.append(f"{', '.join(features)} {verb} present but {reason}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Selection:
    """Every recipe of the host's architecture, highest priority first, and the best runnable one."""

    host: HostInfo
    verdicts: tuple[Verdict, ...]

    @property
    def best(self) -> Recipe | None:
        return next((v.recipe for v in self.verdicts if v.runnable), None)

    def verdict(self, name: str) -> Verdict:
        for verdict in self.verdicts:
            if verdict.recipe.name == name:
                return verdict
        raise KeyError(f"no {self.host.arch} recipe named {name!r}")


def judge(host: HostInfo, recipe: Recipe) -> Verdict:
    """Can `host` run code built from `recipe`?"""
    missing = tuple(f for f in recipe.features if f not in host.cpu_features)
    unusable = tuple((f, host.unusable[f]) for f in recipe.features if f in host.unusable)
    return Verdict(recipe, missing, unusable)


def select(host: HostInfo, recipes: RecipeSet) -> Selection:
    """Judge every recipe of the host's architecture; the best is the runnable one with top priority."""
    ordered = sorted(recipes.for_arch(host.arch), key=lambda r: (-r.priority, r.name))
    return Selection(host, tuple(judge(host, recipe) for recipe in ordered))
