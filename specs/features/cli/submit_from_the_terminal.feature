Feature: Submitting from the terminal
  A person at a terminal uses the `llorch` command: it submits a prompt and prints the
  tokens as they arrive, then the timings; a refusal is printed with its code and the
  command exits non-zero. The command takes the orchestrator's URL and an API key.

  Background:
    Given a running llorch with two ready pools of the tiny model

  @CLI-04 @CLI-06
  Scenario: llorch submit prints the tokens and then the timings
    When I run llorch submit "Hello" for 12 tokens with the client key
    Then the command succeeds and prints the generated text
    And it reports 12 tokens and the time to the first token

  @CLI-04 @CLI-05
  Scenario: llorch submit reports a refusal with its code and exit code 1
    When I run llorch submit "Hello" for model "no-such-model" with the client key
    Then the command exits with code 1 and says "MODEL_NOT_FOUND"

  @CLI-04
  Scenario: llorch caps prints the pools and the API version
    When I run llorch caps with the client key
    Then the command succeeds and prints "tiny-a", "tiny-b" and "api_version"

  @CLI-06 @SEC-01
  Scenario: Without a key the command is refused and says so
    When I run llorch caps with no key
    Then the command exits with code 1 and says "a valid API key is required"
