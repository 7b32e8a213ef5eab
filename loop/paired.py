"""An ablation's verdict per arm: the paired difference to the control arm, seed by seed (summary.md, daig report)."""
from __future__ import annotations

from eval.stats import detectable_effect, paired_bootstrap_ci, paired_t_ci


def control_arm(arms: list[str], declared: str = "") -> str:
    """The arm the others are compared with: the one the ablation file names, else `uniform` when there is one, else
    the first arm."""
    return declared or ("uniform" if "uniform" in arms else arms[0])


def paired_measure(rows: list[dict]) -> tuple[str, str, str]:
    """(summary key, its name, a note): the test set's macro loss when the runs have one, else the eval loss."""
    if any(r.get("final_test_loss") is not None for r in rows):
        hashes = {r.get("test_set_sha256") for r in rows if r.get("status") == "done" and r.get("final_test_loss") is not None}
        if len(hashes) > 1:  # arms whose overrides changed the sets built their own
            return "final_test_loss", "macro test loss", ("WARNING: the arms were scored on different test sets (their overrides changed "
                                                          "what the sets are), so a difference mixes the arms with their test rows; "
                                                          "negative is better (lower loss).")
        return "final_test_loss", "macro test loss", "Every arm is scored on the same test rows; negative is better (lower loss)."
    if all(r.get("eval_set") == "validation" for r in rows if r.get("status") == "done"):
        return "final_eval_loss", "macro validation loss", "Every arm is scored on the same validation rows; negative is better (lower loss)."
    return "final_eval_loss", "macro eval loss", ("Each arm is scored on its own held-out generated rows, so a difference mixes the arms' "
                                                 "policies with the rows they were scored on; negative is better (lower loss).")


def paired_differences(rows: list[dict], control: str, key: str = "final_eval_loss") -> list[dict]:
    """Each arm minus the control, seed by seed: mean, 95% t interval (which gives the reading) and 95% bootstrap
    interval. Fewer than 2 paired seeds give no interval."""
    done = {(r["arm"], r["seed"]): r[key] for r in rows if r.get("status") == "done" and r.get(key) is not None}
    out = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        if arm == control:
            continue
        diffs = [done[(arm, s)] - done[(control, s)] for a, s in done if a == arm and (control, s) in done]
        mean, low, high = paired_t_ci(diffs)
        _, boot_low, boot_high = paired_bootstrap_ci(diffs)
        reading = ("no seed finished in both arms" if not diffs else "one seed: no interval" if len(diffs) < 2
                   else "the interval contains 0: no difference detected" if low <= 0 <= high
                   else f"lower than {control}" if high < 0 else f"higher than {control}")
        out.append({"arm": arm, "seeds": len(diffs), "mean": mean, "low": low, "high": high, "boot_low": boot_low,
                    "boot_high": boot_high, "detectable": detectable_effect(diffs), "reading": reading})
    return out
