"""The mini PPO: config, losses, rollout, trainer, background jobs, rewards and the sample domain's lexicon."""
