-- Version 1 of the "standard" plan, in force since before any usage. Prices are cents per
-- `per` base units: tokens and characters per million, durations per minute (60000 ms).
-- New prices are new versions (mediai billing prices publish), never edits of this one.

INSERT INTO billing.price_books (plan, version, effective_from, currency, note)
VALUES ('standard', 1, '2000-01-01T00:00:00Z', 'BRL', 'initial price book');

INSERT INTO billing.prices (plan, version, meter, cents, per) VALUES
    ('standard', 1, 'llm_prompt_tokens', 150, 1000000),
    ('standard', 1, 'llm_completion_tokens', 600, 1000000),
    -- cached tokens are a part of the prompt tokens, already priced there
    ('standard', 1, 'llm_cached_tokens', 0, 1000000),
    ('standard', 1, 'stt_audio', 3, 60000),
    ('standard', 1, 'tts_characters', 8000, 1000000),
    -- synthesis is priced by characters
    ('standard', 1, 'tts_audio', 0, 60000),
    ('standard', 1, 'realtime_input_audio_tokens', 1600, 1000000),
    ('standard', 1, 'realtime_output_audio_tokens', 6500, 1000000),
    ('standard', 1, 'realtime_input_text_tokens', 300, 1000000),
    ('standard', 1, 'realtime_output_text_tokens', 1200, 1000000),
    ('standard', 1, 'agent_session', 10, 60000),
    ('standard', 1, 'video', 5, 60000),
    ('standard', 1, 'avatar', 50, 60000),
    ('standard', 1, 'agent_sessions', 0, 1),
    ('standard', 1, 'participant_time', 2, 60000),
    ('standard', 1, 'egress_time', 8, 60000);
