"""A prompts file of chat prompts (`messages`) works on every page that shows prompts: the Overview
(with a reward, which scores prompt text) and the Token inspector (issue 16: both raised
AttributeError: 'tuple' object has no attribute 'get' in prompt_text)."""

import json

from klviz.app import sidebar
from tests.app.test_pages import _fresh, allow_root, app, clean, K, shown
from tests.helpers.tiny import save_pair

FIXTURES = (_fresh,)  # test_pages' autouse fixture (fresh caches, private folders) applies here too

CHATS = [
    [{"role": "system", "content": "You review hotels."}, {"role": "user", "content": "the food was"}],
    [{"role": "user", "content": "the room and"}],
]


def test_chat_prompts_work_on_the_overview_reward_and_the_token_inspector(tmp_path, monkeypatch):
    allow_root(monkeypatch, tmp_path)  # the owner's --data-root: typed paths resolve only inside allowed roots
    policy, sft = save_pair(tmp_path / "pair", kind="gpt2")  # its tokenizer has a chat template
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"id": f"c{i}", "messages": m}) + "\n" for i, m in enumerate(CHATS)),
                    encoding="utf-8")
    at = clean(app(**{K.PAIR: sidebar.LOCAL, K.POLICY_PATH: str(policy), K.SFT_PATH: str(sft), K.PROMPTS: str(path),
                      K.N_PROMPTS: 0, K.OVERVIEW_REWARD: "length"}).run())
    labels = [shown(m.label) for m in at.metric]
    assert "Mean reward (length), policy samples" in labels
    clean(at.switch_page("pages/token_inspector.py").run())
    options = [shown(o) for o in at.selectbox(key=K.INSPECT_PROMPT).options]
    assert len(options) == 2 and options[1].startswith("c1") and "the room and" in options[1]  # the chat's text
    clean(at.selectbox(key=K.INSPECT_PROMPT).set_value("c1").run())
    assert at.selectbox(key=K.INSPECT_PROMPT).value == "c1"
