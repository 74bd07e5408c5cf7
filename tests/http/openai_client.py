"""Drives Tandem's OpenAI-compatible API with the official `openai` package (tests/test_collab_http.cpp).

Usage: openai_client.py BASE_URL API_KEY. Prints one JSON line with what the test checks; exits 3 when the
package is missing so the caller can skip with a reason."""
import json
import sys

try:
    import openai
except ImportError:
    print("the 'openai' Python package is not installed (pip install openai)")
    sys.exit(3)

base_url, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=key)
out = {"models": [m.id for m in client.models.list().data]}
c = client.completions.create(model=out["models"][0], prompt="Once upon a time", max_tokens=24, temperature=0)
out["completion"] = c.choices[0].text
out["completion_tokens"] = c.usage.completion_tokens
chunks = client.chat.completions.create(model=out["models"][0], messages=[{"role": "user", "content": "Hi"}],
                                        max_tokens=12, temperature=0, stream=True)
out["chat_stream"] = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
try:
    client.completions.create(model=out["models"][0], prompt="x", max_tokens=10**9)
    out["bad_max_tokens"] = "accepted"
except openai.BadRequestError as e:
    out["bad_max_tokens"] = e.status_code
bad = openai.OpenAI(base_url=base_url, api_key="wrong")
try:
    bad.models.list()
    out["bad_key"] = "accepted"
except openai.AuthenticationError as e:
    out["bad_key"] = e.status_code
print(json.dumps(out))
