"""The shipped sample data's generator: `klviz.sample.make.make_sample_data(out, quick)`.

corpus (review grammar) -> tokenizer (byte-level BPE) -> train_sft (small GPT-2) -> policies (mini PPO)
-> report (figures measured with klviz's engine) -> readme (sample_data/README.md).
"""
