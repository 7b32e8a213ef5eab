# Lines from yizhongw/self-instruct (Apache-2.0), self_instruct/identify_clf_or_not.py @ 10dd06e1156c693482f9ab752ed6f3d3b0bf23cb,
# for parity tests only. The script has no functions: the marked lines of its __main__ block are wrapped, unchanged,
# in functions a test can call. The label rule is the one generate_instances.py / prepare_for_finetuning.py apply to
# the stored reply (`data["is_classification"].strip() in ["Yes", "yes", "YES"]`).
from si_templates import template_1

templates = {
    "template_1": template_1
}


def reference_prompts(args, batch):
    # ---- from __main__, unchanged ----
                prefix = templates[args.template]
                prompts = [prefix + " " + d["instruction"].strip() + "\n" + "Is it classification?" for d in batch]
    # ----
                return prompts


def reference_request_params():
    # ---- the decoding arguments of the make_gpt3_requests call in __main__, unchanged ----
    return dict(
                    max_tokens=3,
                    temperature=0,
                    top_p=0,
                    frequency_penalty=0,
                    presence_penalty=0,
                    stop_sequences=["\n", "Task"],
                    logprobs=1,
                    n=1,
                    best_of=1,
    )


def reference_is_classification(data):
    # ---- from generate_instances.py / prepare_for_finetuning.py __main__, unchanged ----
                return data["is_classification"].strip() in ["Yes", "yes", "YES"]
