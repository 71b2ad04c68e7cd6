"""The pruning-strategy search: Algorithm 1 of the ACNN paper with AMC's episode schedule.

Each episode walks the layers once (``env.reset`` ... terminal ``env.step``), storing every
transition with its per-layer reward ``r_t`` (Algorithm 1, line 7). After the warm-up episodes
the agent is updated once per stored transition at the end of each episode (AMC's schedule; the
paper's Algorithm 1 also clears the replay after each training pass, which with AMC's replay
size would leave only a few dozen updates in a whole search, so we keep AMC's memory).

The result of a search is the actor's deterministic policy after the last episode (the
"converged" agent of Algorithm 1, line 22) and, as AMC reports, the best episode seen.
"""

from __future__ import annotations

import logging
import time

from tqdm import tqdm

from replib.rl.ddpg import DDPGAgent
from replib.rl.env import NeuronPruningEnv

log = logging.getLogger(__name__)


def greedy_episode(env: NeuronPruningEnv, agent: DDPGAgent) -> dict:
    """One noise-free episode of the actor: fractions, kept counts, acc, NCR, return."""
    obs, _ = env.reset()
    fractions, total, info, done = [], 0.0, {}, False
    while not done:
        a = agent.act(obs)
        fractions.append(a)
        obs, r, done, _, info = env.step([a])
        total += r
    return {"fractions": fractions, "kept": info["kept"], "acc": info["acc"],
            "ncr": info["ncr"], "return": total}


def run_search(env: NeuronPruningEnv, agent: DDPGAgent, episodes: int,
               progress: bool | None = None, desc: str = "search") -> dict:
    """Train ``agent`` on ``env`` for ``episodes`` episodes (warm-up included).

    Returns ``history`` (one row per episode: return, final acc and NCR, kept counts, actions,
    mean losses, agent sparsity, elapsed time), ``final`` (the greedy policy at the end),
    ``best`` (the episode with the highest return) and timings: ``time_s`` (wall) and
    ``cpu_time_s`` (process CPU time, robust to other jobs on a shared machine).
    """
    if episodes <= agent.cfg.warmup:
        raise ValueError(f"episodes={episodes} must exceed the warm-up ({agent.cfg.warmup})")
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    history, best = [], None
    for ep in tqdm(range(episodes), desc=desc, disable=not progress if progress is not None
                   else None, leave=False):
        obs, _ = env.reset()
        transitions, total, done, info = [], 0.0, False, {}
        actions = []
        while not done:
            a = agent.explore(obs, ep)
            obs2, r, done, _, info = env.step([a])
            transitions.append((obs, a, r, obs2, done))
            actions.append(info["action"])
            total += r
            obs = obs2
        losses = []
        for tr in transitions:
            agent.observe(*tr)
            if ep >= agent.cfg.warmup:
                losses.append(agent.update())
        row = {
            "episode": ep + 1,
            "return": total,
            "acc": info["acc"],
            "ncr": info["ncr"],
            "kept": info["kept"],
            "actions": actions,
            "critic_loss": (sum(x["critic_loss"] for x in losses) / len(losses)
                            if losses else None),
            "actor_loss": (sum(x["actor_loss"] for x in losses) / len(losses)
                           if losses else None),
            "agent_sparsity": agent.sparsity(),
            "time_s": time.perf_counter() - t_wall,
        }
        history.append(row)
        if best is None or total > best["return"]:
            best = {"episode": ep + 1, "return": total, "acc": info["acc"], "ncr": info["ncr"],
                    "kept": info["kept"], "fractions": actions}
    time_s, cpu_s = time.perf_counter() - t_wall, time.process_time() - t_cpu
    final = greedy_episode(env, agent)
    log.info("%s: %d episodes in %.1f s; final kept %s acc %.4f ncr %.3f", desc, episodes,
             time_s, final["kept"], final["acc"], final["ncr"])
    return {"history": history, "final": final, "best": best, "time_s": time_s,
            "cpu_time_s": cpu_s, "evaluations": env.evaluator.evaluations,
            "lookups": env.evaluator.lookups, "agent_sparsity": agent.sparsity(),
            "updates": agent.updates}
