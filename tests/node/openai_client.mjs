// The Node `openai` package as a client of the service: what a Node user of the SDK sees.
//
//   OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=<refresh token> \
//     node openai_client.mjs [--base-url URL] [CASE...]
//
// Runs the named cases (all when none is named) and prints one JSON object: the result of each
// case by name, or {"error": {...}} for a case that threw. The prompts carry [[emulate: ...]]
// scripts, so the answers are scripted when the service talks to the Kimi emulator.
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { z } from "zod";

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
    },
  },
};
const PARIS_CALL =
  '[[emulate: call get_weather {"city": "Paris"} ;; text It is 21 degrees in Paris.]]';
const City = z.object({ city: z.string(), temp: z.number() });

function ask(content) {
  return [{ role: "user", content }];
}

function describeCalls(message) {
  return (message.tool_calls ?? []).map((call) => ({
    id: call.id,
    name: call.function.name,
    arguments: JSON.parse(call.function.arguments),
  }));
}

const CASES = {
  // create() with tools, the tool result sent back, then the final answer.
  async tool_round_trip(client) {
    const messages = ask(`Weather in Paris? ${PARIS_CALL}`);
    const request = () =>
      client.chat.completions.create({ model: "kimi", messages, tools: [WEATHER] });
    const first = await request();
    const message = first.choices[0].message;
    const call = message.tool_calls[0];
    messages.push(message, {
      role: "tool",
      tool_call_id: call.id,
      content: JSON.stringify({ temp: 21 }),
    });
    const final = await request();
    return {
      first: { finish_reason: first.choices[0].finish_reason, tool_calls: describeCalls(message) },
      final: {
        finish_reason: final.choices[0].finish_reason,
        content: final.choices[0].message.content,
      },
    };
  },

  // The SDK's own loop: runTools() calls the JavaScript function and sends its result back.
  async run_tools(client) {
    const calledWith = [];
    const getWeather = ({ city }) => {
      calledWith.push(city);
      return { city, temp: 21 };
    };
    const runner = client.chat.completions.runTools({
      model: "kimi",
      messages: ask(`Weather in Paris? ${PARIS_CALL}`),
      tools: [
        {
          type: "function",
          function: { ...WEATHER.function, function: getWeather, parse: JSON.parse },
        },
      ],
    });
    return { called_with: calledWith, final_content: await runner.finalContent() };
  },

  // stream(): tool-call deltas reassembled by the stream helper.
  async stream_tool_call(client) {
    const script =
      '[[emulate: prose-call get_weather {"city": "Paris"} ++ call get_weather {"city": "Rome"}]]';
    const stream = client.chat.completions.stream({
      model: "kimi",
      messages: ask(script),
      tools: [WEATHER],
    });
    const done = [];
    stream.on("tool_calls.function.arguments.done", (event) => {
      done.push({ name: event.name, arguments: JSON.parse(event.arguments) });
    });
    const final = await stream.finalChatCompletion();
    return {
      arguments_done: done,
      finish_reason: final.choices[0].finish_reason,
      content: final.choices[0].message.content,
      tool_calls: describeCalls(final.choices[0].message),
    };
  },

  // create({stream: true}): the text as chunks.
  async stream_text(client) {
    const stream = await client.chat.completions.create({
      model: "kimi",
      messages: ask("hi"),
      stream: true,
    });
    const parts = [];
    let finishReason = null;
    for await (const chunk of stream) {
      parts.push(chunk.choices[0]?.delta?.content ?? "");
      finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
    }
    return { text: parts.join(""), chunks: parts.length, finish_reason: finishReason };
  },

  // parse() with a zod schema: the answer comes back as a checked object.
  async parse_zod(client) {
    const completion = await client.chat.completions.parse({
      model: "kimi",
      messages: ask('Paris now? [[emulate: json {"city": "Paris", "temp": 21}]]'),
      response_format: zodResponseFormat(City, "city"),
    });
    return { parsed: completion.choices[0].message.parsed };
  },

  // parse() when the JSON stays invalid after the service's one repair: an APIError.
  async parse_invalid(client) {
    await client.chat.completions.parse({
      model: "kimi",
      messages: ask('[[emulate: json {"city": "Paris"} ;; text Sorry, no.]]'),
      response_format: zodResponseFormat(City, "city"),
    });
    return { parsed: "no error was raised" };
  },
};

function parseArgs(argv) {
  const names = [];
  let baseURL = process.env.OPENAI_BASE_URL;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--base-url") baseURL = argv[++i];
    else names.push(argv[i]);
  }
  return { baseURL, names: names.length ? names : Object.keys(CASES) };
}

async function main() {
  const { baseURL, names } = parseArgs(process.argv.slice(2));
  const unknown = names.filter((name) => !(name in CASES));
  if (!baseURL || !process.env.OPENAI_API_KEY || unknown.length) {
    const cases = Object.keys(CASES).join("|");
    console.error(`usage: OPENAI_API_KEY=... node openai_client.mjs --base-url URL [${cases}...]`);
    process.exit(2);
  }
  const apiKey = process.env.OPENAI_API_KEY;
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20_000 });
  const results = {};
  for (const name of names) {
    try {
      results[name] = await CASES[name](client);
    } catch (error) {
      const { status = null, code = null, message } = error;
      results[name] = { error: { type: error.constructor.name, status, code, message } };
    }
  }
  console.log(JSON.stringify(results, null, 2));
}

await main();
