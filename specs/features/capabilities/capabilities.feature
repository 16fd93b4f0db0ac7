Feature: Capabilities and tokenizing
  A client can discover what the fleet serves (engines, models, context, slots, the
  parameters each pool honours, the API version) and use a model's own tokenizer.

  Background:
    Given a running llorch with two ready pools of the tiny model

  @API-09 @API-16
  Scenario: The capabilities list each ready pool with its engine, model, context and slots
    When I read the capabilities
    Then the API version is "2.0.0"
    And pool "tiny-a" is listed with engine "llamacpp-inproc", model "tiny", a context of 16384 and 1 slot
    And pool "mock-1" lists exactly the parameters its engine honours

  @API-09
  Scenario: A client can pin the API version it speaks
    When I read the capabilities pinned to API version ">=2.0,<3"
    Then the answer is 200
    When I read the capabilities pinned to API version ">=3"
    Then the answer is 400 with error code "INVALID_PARAMS"
    And the error message says "2.0.0"

  @API-14
  Scenario: Tokenizing gives ids with byte offsets and detokenizing gives the text back
    When I tokenize "héllo wörld" with offsets
    Then I get one byte offset per token, starting at 0 and never decreasing
    When I detokenize those tokens
    Then I get "héllo wörld" back

  @API-14 @API-07
  Scenario: Tokenizing for a model nobody serves is a typed 404
    When I tokenize "x" for model "no-such-model"
    Then the answer is 404 with error code "MODEL_NOT_FOUND"
