"""Adaptive-difficulty curriculum: one sampler that decides which prompts a stage trains on next
(GRPO's prompts, on-policy DPO's rounds, SFT's order).

Six modules, by what they depend on:

* `strategies.py` (numpy only): buckets, the evidence, the strategies;
* `sampler.py` (+ torch): the index stream in TRL's contract, with exact resume;
* `rounds.py`: the sampler for a stage that works in rounds (on-policy DPO);
* `callback.py` (+ transformers): the sampler's state in every checkpoint, curriculum.csv and .png;
* `training.py`: the curriculum add-on (stages/addons.py) of a trainer drawing through TRL's
  `RepeatSampler` (grpo, and any stage that passes its own layout), its reward feedback, and SFT's sampler;
* `dynamic_sampling.py`: the grpo add-on that replaces groups without signal (below).

None of them touches a private detail of TRL, transformers or accelerate: those couplings all live in
stages/trl_hooks.py, pinned by tests/curriculum/test_trl_contract.py.

What it is made of, in the order the data flows:

* **Buckets.** Prompts are grouped by a difficulty column (`level` 1..6 on the synthetic task): one
  bucket per value, quantile bins for a numeric column with many values, or one bucket per category.
* **Evidence.** Every GRPO group is `num_generations` completions of one prompt, so each generation
  batch measures, for free, each drawn prompt's pass rate and its group's mean absolute advantage
  |r - mean(r_group)|. `Evidence.record` keeps each prompt's latest pass rate and, per bucket,
  moving averages (`step_size`) of pass rate and mean |advantage|. With `prior_column`
  (a `difficulty` stage's offline `pass_rate`, stages/difficulty.py) every prompt starts from its
  measured pass rate and every bucket from its prompts' mean (value 2 p (1 - p)), so a strategy knows
  the pool before its first draw: a level bucket holds prompts the model always and never solves,
  and only per-prompt knowledge can tell them apart.
* **Strategies** turn the evidence into the next generation batch's bucket shares:

  | strategy   | source                                   | what gradus does, and where it deviates |
  |------------|------------------------------------------|------------------------------------------|
  | `uniform`  | TRL `RepeatSampler(shuffle=True)`        | the same index stream as TRL (one torch permutation per epoch from `seed`); the control |
  | `ordered`  | Platanios et al. 2019, "Competence-based Curriculum Learning for NMT": c(t) = min(1, sqrt(t (1 - c0^2) / T + c0^2)) | draws uniformly from the easiest c(t) of the data by the column; buckets, not single prompts, are the unit |
  | `adaptive` | ADCL (Learning Like Humans, 2025): re-estimate the difficulty of upcoming data periodically | the same pacing, but every `reestimate_every` batches the buckets are re-ranked by their *online* pass rate instead of re-sampling upcoming prompts with the current model |
  | `band`     | learnability filtering (open-r1 0.2-0.8 band; open-instruct `no_resampling_pass_rate`) | per-prompt weights: 1 inside the band, `revisit_probability` outside it, 0 once retired; unseen prompts take their bucket's pass rate |
  | `bandit`   | SEC (Self-Evolving Curriculum, 2025): arms = buckets, reward = mean absolute advantage, Q <- Q + alpha (r - Q) (TD(0)), Boltzmann P(b) ~ exp(Q_b / tau) | advantages are unnormalised (r - group mean), so for 0/1 rewards E|A| = 2p(1-p), largest at p = 1/2 |
  | `ucb`      | DUMP (2025): UCB_b = mean|A|_b + c sqrt(2 ln N / (n_b + 1)), softmax with temperature | mean|A|_b is SEC's moving average instead of DUMP's window of the last 300 advantages |
  | `lp`       | ALP-GMM (Portelas et al. 2019) / TeachMyAgent: absolute learning progress, sampling in proportion to it | progress per bucket = |mean pass rate of its latest `lp_window` observations - of the `lp_window` before|, not a GMM over a task space; unmeasured buckets count 1 |

* **Safeguards** (all but `uniform`): every bucket with drawable prompts keeps at least `min_share`
  (p <- min_share + (1 - k min_share) p over the k available buckets; by default 0.1 / k, a tenth of
  every batch however many buckets there are), and a prompt is drawn at most
  once in any `repeat_window` consecutive generation batches. A bucket that cannot supply its count
  (everything cooling down or retired) hands the shortfall to the others.

Distribution: every rank builds the same sampler from the same seed and data, and draws from its own
`numpy` generator only; statistics change only through `record`, which the reward wrapper
(`ScoreFeedback`) calls on every rank with the scores gathered from all ranks, in rank order. So all
ranks hold identical state and yield identical indices.

Resumption: the state (numpy RNG, every statistic, the draw position, and the chunks already drawn but
not yet trained on) is written into each checkpoint as `curriculum_state.npz`, before HF writes its
`trainer_state.json`, and restored when training resumes, before the dataloader is iterated. HF then
skips the batches the checkpoint already trained on by iterating the sampler; the restored sampler
knows exactly which (it computes the skip the way the Trainer does) and yields placeholders for them
without touching its state, replays the recorded chunks, then draws on from the restored RNG. So a
resumed run yields the same indices as an uninterrupted one. (When a checkpoint falls inside a
generation batch, possible only with steps_per_generation or num_iterations above the defaults, TRL
itself regenerates that batch on resume, and the curriculum records the regenerated scores.)

Dynamic sampling (`dynamic_sampling: true`, with any strategy; DAPO, and SPEED-RL's screening with
`screen_generations`): groups whose signal rewards all tie are dropped before TRL sees the batch and
replaced by prompts the strategy draws (`CurriculumSampler.draw_replacements`), the extra generations
counted in the logs; see `dynamic_sampling.DynamicSampling`. The zero-advantage fraction TRL logs
(`frac_reward_zero_std`) is the waste it removes, and the waste measure for everything else.

Reuse: on-policy DPO's rounds draw their prompts from a `CurriculumSampler` with
`RepeatLayout(1, prompts_per_round, 1)` and record the total scores of the completions they sample
(`rounds.py`); SFT takes `strategy: ordered` (easy-to-hard pacing, which needs no scores), one chunk per
dataloader step across processes (`training.attach_to_sft`).
"""
