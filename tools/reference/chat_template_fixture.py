#!/usr/bin/env python3
"""Independent reference for grpo4j's chat templates: renders each named template (tulu, llama3, r1_simple_chat,
r1_simple_chat_postpend_think: their Jinja sources as grpo4j holds them) on a set of chats with jinja2 set up as
transformers' apply_chat_template sets it up (an immutable sandboxed environment, trim_blocks, lstrip_blocks, the
loopcontrols extension, raise_exception), and writes what it rendered.

Needs jinja2 (transformers uses it; Debian's python3-jinja2 will do). From the repository root:

    mvn -q test -Dtest=ChatTemplateFixtureTest          # writes target/chat-template-cases.json (fails while stale)
    python3 tools/reference/chat_template_fixture.py target/chat-template-cases.json \
        src/test/resources/fixtures/chat-templates/rendered.json

The input holds the template sources and the chats (src/test/java/.../ChatTemplateFixtureTest.java makes it); the
output is the input plus, per template, the rendered text of every chat. ChatTemplateFixtureTest compares grpo4j's
rendering (Jinjava) with it, and says when the fixture no longer matches the templates or the chats.
"""
import json
import sys

import jinja2
import jinja2.ext
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise TemplateError(message)


def main(src, out):
    with open(src, encoding="utf-8") as f:
        data = json.load(f)
    # transformers.utils.chat_template_utils._compile_jinja_template (4.4x-5.x)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    rendered = {}
    for name, source in data["templates"].items():
        t = env.from_string(source)
        rendered[name] = [t.render(messages=c["messages"], add_generation_prompt=c["add_generation_prompt"],
                                   bos_token=c["bos_token"], eos_token=c["eos_token"]) for c in data["cases"]]
    data["rendered"] = rendered
    data["generator"] = f"tools/reference/chat_template_fixture.py, jinja2 {jinja2.__version__}"
    with open(out, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {out}: {len(rendered)} templates x {len(data['cases'])} chats")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
