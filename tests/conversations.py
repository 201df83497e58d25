"""A corpus of conversations for template parity tests (written for lfc)."""

from __future__ import annotations

LONG = " ".join(f"word{i}" for i in range(600))

PLAIN: list[list[dict]] = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ],
    [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": "five"},
        {"role": "assistant", "content": "six"},
    ],
    [
        {"role": "user", "content": "Ünïcödé ✓ 日本語 😀"},
        {"role": "assistant", "content": "Ça va — très bien. 你好"},
    ],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
    [
        {"role": "user", "content": "  padded with spaces \n\n"},
        {"role": "assistant", "content": "\n  and newlines  \n"},
    ],
    [{"role": "user", "content": LONG}, {"role": "assistant", "content": LONG}],
    [
        {"role": "system", "content": "Line one.\nLine two."},
        {"role": "user", "content": "Code:\n```python\nprint('{{ not jinja }}')\n```"},
        {"role": "assistant", "content": "It prints {{ not jinja }} and {% raw %}."},
    ],
    [{"role": "user", "content": "Only a question, no answer yet"}],
    [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ],
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}

TOOLS: list[tuple[list[dict], list[dict]]] = [
    (
        [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                    }
                ],
            },
            {"role": "tool", "content": '{"temp": -3, "sky": "snow"}'},
            {"role": "assistant", "content": "It is -3 °C and snowing in Oslo."},
        ],
        [WEATHER_TOOL],
    ),
    (
        [
            {"role": "system", "content": "Use tools when useful."},
            {"role": "user", "content": "Oslo and Rome?"},
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                    },
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Rome"}},
                    },
                ],
            },
            {"role": "tool", "content": "cold"},
            {"role": "tool", "content": "warm"},
            {"role": "assistant", "content": "Oslo is cold, Rome is warm."},
        ],
        [WEATHER_TOOL],
    ),
    (
        [{"role": "user", "content": "No tool needed"}, {"role": "assistant", "content": "Right."}],
        [WEATHER_TOOL],
    ),
]
