"""Feature evaluation on the seeded cross world with settings that use the cross."""

from __future__ import annotations

from tuning_world import World

from cbloop_pipeline.tuning.features import evaluate_features


def test_useful_namespace_is_clearly_positive_and_useless_one_about_zero(
    crossed_world: World,
) -> None:
    report = evaluate_features(
        crossed_world.store, "default", crossed_world.experiment, crossed_world.joins
    )
    by_char = {e.char: e for e in report.effects}
    assert set(by_char) == {"u", "i", "n", "A"}
    user, noise = by_char["u"], by_char["n"]
    assert user.delta is not None and noise.delta is not None
    # Without `user` the cross is gone: the policy falls from ~HIGH to the uniform value.
    assert user.delta.ci_low > 0.3
    assert user.verdict == "helps"
    assert abs(noise.delta.value) < 0.01
    assert noise.verdict == "negligible"
    # Names colliding on the first character are left out together.
    assert set(noise.namespaces) == {"noise", "nuisance"}
    # Ranked by how much the namespace is worth.
    assert report.effects[0].char in {"u", "i"}


def test_warnings_name_id_like_constant_and_colliding_features(crossed_world: World) -> None:
    report = evaluate_features(
        crossed_world.store, "default", crossed_world.experiment, crossed_world.joins
    )
    found = {(w.kind, w.namespace, w.feature) for w in report.warnings}
    assert ("id_like", "noise", "session") in found
    assert ("constant", "noise", "version") in found
    assert ("collision", "noise, nuisance", None) in found
    # Fresh action ids every event are ID-like too; the planted signal features are not.
    assert ("id_like", "ActionId", "id") in found
    flagged = {(ns, feature) for _, ns, feature in found}
    assert ("user", "seg") not in flagged and ("item", "kind") not in flagged
    assert ("noise", "z") not in flagged and ("nuisance", "w") not in flagged
