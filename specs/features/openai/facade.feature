Feature: The OpenAI-compatible facade
  Applications written for OpenAI's API use llorch through the official `openai` client
  unchanged: chat and completions, streamed or not, with real usage counts; what an engine
  cannot honour is refused in OpenAI's error shape, naming the field.

  Background:
    Given a running llorch with two ready pools of the tiny model
    And the official OpenAI client with the client key

  @API-13
  Scenario: The model list shows the catalog id and its aliases
    When I list the models with the OpenAI client
    Then the models include "tiny" and "default"

  @API-13
  Scenario: A streamed chat arrives in chunks and ends with real usage
    When I stream a chat completion of 8 tokens with the OpenAI client
    Then the chunks carry text and finish with reason "length"
    And the usage counts 8 completion tokens and the prompt's tokens

  @API-13
  Scenario: A completion without streaming returns its text and usage
    When I ask for a completion of 6 tokens with the OpenAI client
    Then the completion has text and finish reason "length"
    And the usage counts 6 completion tokens and the prompt's tokens

  @API-16 @API-13
  Scenario: A parameter the engine cannot honour is refused in OpenAI's error shape
    When I ask model "m" for a chat in JSON mode with the OpenAI client
    Then the client raises a bad request error with code "UNSUPPORTED_PARAM" for parameter "response_format"

  @API-13 @API-07
  Scenario: An unknown model is a not-found error
    When I ask model "no-such-model" for a chat with the OpenAI client
    Then the client raises a not found error with code "MODEL_NOT_FOUND"

  @REL-05
  Scenario: A request retried with the same Idempotency-Key gets the same completion
    When I ask twice for a completion of 6 tokens with Idempotency-Key "v1-bdd-retry"
    Then both answers are the same task with the same text

  @API-17
  Scenario: The client's tool-call loop gets a call, then an answer that read the tool's result
    When I ask for the weather in Paris with a "get_weather" tool the model must call
    Then the answer is one call of "get_weather" whose arguments satisfy its parameters
    And the finish reason is "tool_calls"
    When I send the call and the tool's result back, asking for no more calls
    Then the answer is text with no tool call

  @API-17 @API-16
  Scenario: Tools for an engine that cannot call them are refused, naming the field
    When I ask model "m" for a chat with a "get_weather" tool with the OpenAI client
    Then the client raises a bad request error with code "UNSUPPORTED_PARAM" for parameter "tools"
