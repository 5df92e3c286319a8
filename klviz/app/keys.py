"""Every st.session_state key the app uses (widget keys included), defined once."""


class Keys:
    """Every st.session_state key the app uses (widget keys included), defined once."""

    CURRENT = "app.current"  # the View: this run's pair, settings and load error (klviz.app.view)
    PAIR = "pair.choice"
    PENDING_PAIR = "pair.pending"  # a pair label to select on the next run (after "Save policy")
    POLICY_PATH, SFT_PATH, POLICY_BASE = "pair.policy_path", "pair.sft_path", "pair.policy_base"
    POLICY_UPLOAD, SFT_UPLOAD = "pair.policy_upload", "pair.sft_upload"
    UPLOADED = "pair.uploaded"  # uploader file_id -> saved Path, so each upload is written once
    DEVICE, DTYPE = "pair.device", "pair.dtype"
    PROMPTS, N_PROMPTS = "sampling.prompts", "sampling.n_prompts"
    SAMPLES, MAX_NEW_TOKENS = "sampling.samples_per_prompt", "sampling.max_new_tokens"
    TEMPERATURE, SEED, SAMPLE_FROM = "sampling.temperature", "sampling.seed", "sampling.sample_from"
    RESPONSES_MODE = "sampling.responses_mode"  # sample from the prompts, or score a responses file
    RESPONSES_PATH, RESPONSES_UPLOAD = "sampling.responses_path", "sampling.responses_upload"
    SAVED = "ppo.saved"  # label -> SavedPolicy, shown in the pair picker
    OVERVIEW_REWARD, OVERVIEW_REWARD_OTHER = "overview.reward", "overview.reward_other"
    INSPECT_SOURCE, INSPECT_PROMPT = "inspect.source", "inspect.prompt"
    INSPECT_SAMPLE, INSPECT_QUANTITY = "inspect.sample", "inspect.quantity"
    INSPECT_TOKEN = "inspect.token"  # the picked token: its index into the shown response
    INSPECT_RESPONSE = "inspect.response"  # (source, prompt, sample) shown: a new one starts at its largest KL
    INSPECT_POSITION = "inspect.position"  # a position another page asks the inspector to open (read once)
    SHIFT_SOURCE, SHIFT_VIEW = "shift.source", "shift.view"
    ACTED_SOURCE, ACTED_SPIKES, ACTED_VIEW = "acted.source", "acted.spikes", "acted.view"  # Where RL acted
    PPO_REWARD, PPO_PLACEMENT, PPO_ESTIMATOR = "ppo.reward", "ppo.placement", "ppo.estimator"
    PPO_BETA, PPO_ADAPTIVE, PPO_TARGET = "ppo.beta", "ppo.adaptive", "ppo.target_kl"
    PPO_LR, PPO_STEPS, PPO_BATCH, PPO_FROM = "ppo.lr", "ppo.steps", "ppo.batch_size", "ppo.from"
    PPO_MAX_NEW = "ppo.max_new_tokens"
    PPO_INTERACTIVE = "ppo.interactive"  # interactive (plotly) charts while a run trains, instead of images
    PPO_POLLS = "ppo.polls"  # how many times the live panel has refreshed (shown, and benchmarked)
    PPO_FLASH = "ppo.flash"  # a message to show once on the next run (after "Save policy")
    SESSION = "app.session"  # this browser session's id, for the server-wide job registry
    # The first view's three phases (klviz.app.first_view):
    HEADLINE_ONLY = "app.headline_only"  # this run draws only the default view's headline
    REST_SOON = "app.rest_soon"  # the rest of the default view follows on its fragment's next run
    LOAD_SOON = "pair.load_soon"  # the default view's pair loads on its fragment's next run
    TABLE_PATH, TABLE_UPLOAD = "table.path", "table.upload"  # "Open a token table…": a typed path or an upload
    TABLE_STEP = "table.step"  # the checkpoint step of a series the pages show
    PENDING_STEP = "table.pending_step"  # a step to select on the next run (the Trajectory page's click)
    TRAJ_PER, TRAJ_CHART = "trajectory.per", "trajectory.chart"
    SIDEBAR = (PAIR, DEVICE, DTYPE, PROMPTS, N_PROMPTS, SAMPLES, MAX_NEW_TOKENS, TEMPERATURE, SEED,
               SAMPLE_FROM, PENDING_PAIR, RESPONSES_MODE)  # set once the sidebar has been drawn (or a test set them)
