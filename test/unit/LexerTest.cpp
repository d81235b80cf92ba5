//===- LexerTest.cpp - tokens and locations of the .attn lexer ------------===//
#include "rbfc/Frontend/Lexer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using rbfc::Lexer;
using rbfc::Token;
using rbfc::TokenKind;

namespace {

/// Every token of `text` up to and including the end of file. The texts are
/// copied because an error token's text lives in the lexer.
struct Lexed {
  TokenKind kind;
  std::string text;
  unsigned line;
  unsigned column;
};

std::vector<Lexed> lexAll(llvm::StringRef text) {
  Lexer lexer(text);
  std::vector<Lexed> tokens;
  while (true) {
    Token token = lexer.next();
    tokens.push_back(
        {token.kind, token.text.str(), token.loc.line, token.loc.column});
    if (token.kind == TokenKind::EndOfFile || tokens.size() > 1000)
      return tokens;
  }
}

std::vector<TokenKind> kindsOf(llvm::StringRef text) {
  std::vector<TokenKind> kinds;
  for (const Lexed &token : lexAll(text))
    kinds.push_back(token.kind);
  return kinds;
}

/// The one token `text` lexes to, followed by the end of file.
Lexed single(llvm::StringRef text) {
  std::vector<Lexed> tokens = lexAll(text);
  EXPECT_EQ(tokens.size(), 2u) << "'" << text.str() << "' is not one token";
  EXPECT_EQ(tokens.back().kind, TokenKind::EndOfFile);
  return tokens.front();
}

TEST(Lexer, EmptyInputIsEndOfFileAtOneOne) {
  std::vector<Lexed> tokens = lexAll("");
  ASSERT_EQ(tokens.size(), 1u);
  EXPECT_EQ(tokens[0].kind, TokenKind::EndOfFile);
  EXPECT_EQ(tokens[0].line, 1u);
  EXPECT_EQ(tokens[0].column, 1u);
}

TEST(Lexer, EndOfFileRepeats) {
  Lexer lexer("x");
  EXPECT_EQ(lexer.next().kind, TokenKind::Identifier);
  EXPECT_EQ(lexer.next().kind, TokenKind::EndOfFile);
  EXPECT_EQ(lexer.next().kind, TokenKind::EndOfFile);
}

TEST(Lexer, IdentifiersAndKeywordsAreIdentifiers) {
  std::vector<Lexed> tokens = lexAll("attention _x q_idx kv2 A_b_9");
  ASSERT_EQ(tokens.size(), 6u);
  const char *expected[] = {"attention", "_x", "q_idx", "kv2", "A_b_9"};
  for (unsigned i = 0; i < 5; ++i) {
    EXPECT_EQ(tokens[i].kind, TokenKind::Identifier) << i;
    EXPECT_EQ(tokens[i].text, expected[i]);
  }
}

TEST(Lexer, LocationsCountLinesAndColumns) {
  std::vector<Lexed> tokens = lexAll("ab  cd\n\n  ef(\n\tg");
  ASSERT_EQ(tokens.size(), 6u);
  EXPECT_EQ(tokens[0].text, "ab");
  EXPECT_EQ(tokens[0].line, 1u);
  EXPECT_EQ(tokens[0].column, 1u);
  EXPECT_EQ(tokens[1].text, "cd");
  EXPECT_EQ(tokens[1].line, 1u);
  EXPECT_EQ(tokens[1].column, 5u);
  EXPECT_EQ(tokens[2].text, "ef");
  EXPECT_EQ(tokens[2].line, 3u);
  EXPECT_EQ(tokens[2].column, 3u);
  EXPECT_EQ(tokens[3].kind, TokenKind::LParen);
  EXPECT_EQ(tokens[3].line, 3u);
  EXPECT_EQ(tokens[3].column, 5u);
  // A tab is one column.
  EXPECT_EQ(tokens[4].text, "g");
  EXPECT_EQ(tokens[4].line, 4u);
  EXPECT_EQ(tokens[4].column, 2u);
  EXPECT_EQ(tokens[5].kind, TokenKind::EndOfFile);
  EXPECT_EQ(tokens[5].line, 4u);
  EXPECT_EQ(tokens[5].column, 3u);
}

TEST(Lexer, CommentsRunToTheEndOfTheLine) {
  std::vector<Lexed> tokens = lexAll("# a comment; with ( tokens\n"
                                     "x # trailing } comment\n"
                                     "  y#z\n"
                                     "# last line without newline");
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_EQ(tokens[0].text, "x");
  EXPECT_EQ(tokens[0].line, 2u);
  EXPECT_EQ(tokens[0].column, 1u);
  EXPECT_EQ(tokens[1].text, "y");
  EXPECT_EQ(tokens[1].line, 3u);
  EXPECT_EQ(tokens[1].column, 3u);
  EXPECT_EQ(tokens[2].kind, TokenKind::EndOfFile);
  EXPECT_EQ(tokens[2].line, 4u);
}

TEST(Lexer, OnlyACommentIsEndOfFile) {
  EXPECT_EQ(kindsOf("   # nothing here"),
            std::vector<TokenKind>{TokenKind::EndOfFile});
}

TEST(Lexer, Integers) {
  for (const char *text : {"0", "7", "128", "0042", "9223372036854775807"}) {
    Lexed token = single(text);
    EXPECT_EQ(token.kind, TokenKind::Integer) << text;
    EXPECT_EQ(token.text, text);
  }
}

TEST(Lexer, Floats) {
  for (const char *text :
       {"1.5", "0.125", ".5", "1.", "1e3", "1E3", "2.5e-4", "6e+2", "1.e5",
        ".5e1"}) {
    Lexed token = single(text);
    EXPECT_EQ(token.kind, TokenKind::Float) << text;
    EXPECT_EQ(token.text, text);
  }
}

TEST(Lexer, NumberStopsAtAnOperator) {
  std::vector<Lexed> tokens = lexAll("1.5*2-.25");
  ASSERT_EQ(tokens.size(), 6u);
  EXPECT_EQ(tokens[0].kind, TokenKind::Float);
  EXPECT_EQ(tokens[0].text, "1.5");
  EXPECT_EQ(tokens[1].kind, TokenKind::Star);
  EXPECT_EQ(tokens[2].kind, TokenKind::Integer);
  EXPECT_EQ(tokens[2].text, "2");
  EXPECT_EQ(tokens[3].kind, TokenKind::Minus);
  EXPECT_EQ(tokens[4].kind, TokenKind::Float);
  EXPECT_EQ(tokens[4].text, ".25");
  EXPECT_EQ(tokens[4].column, 7u);
}

TEST(Lexer, TwoDotsAreTwoNumbers) {
  std::vector<Lexed> tokens = lexAll("1..5");
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_EQ(tokens[0].text, "1.");
  EXPECT_EQ(tokens[1].text, ".5");
  EXPECT_EQ(tokens[1].column, 3u);
}

TEST(Lexer, ExponentWithoutDigitsIsAnError) {
  for (const char *text : {"1e", "1e+", "2.5E-", "3ex"}) {
    Lexed token = lexAll(text).front();
    EXPECT_EQ(token.kind, TokenKind::Error) << text;
    EXPECT_EQ(token.text,
              "malformed number: expected digits after the exponent 'e'")
        << text;
    EXPECT_EQ(token.column, 1u);
  }
}

TEST(Lexer, LetterAfterDigitsIsAnError) {
  for (const char *text : {"12abc", "1.5x", "3_", "1e5f"}) {
    Lexed token = lexAll(text).front();
    EXPECT_EQ(token.kind, TokenKind::Error) << text;
    EXPECT_EQ(token.text, "malformed number: a letter follows the digits")
        << text;
  }
}

TEST(Lexer, ErrorTokenKeepsItsLocation) {
  std::vector<Lexed> tokens = lexAll("x =\n   12abc;");
  ASSERT_GE(tokens.size(), 3u);
  EXPECT_EQ(tokens[2].kind, TokenKind::Error);
  EXPECT_EQ(tokens[2].line, 2u);
  EXPECT_EQ(tokens[2].column, 4u);
}

TEST(Lexer, EveryPunctuationAndOperator) {
  struct Case {
    const char *text;
    TokenKind kind;
  } cases[] = {
      {"{", TokenKind::LBrace},        {"}", TokenKind::RBrace},
      {"(", TokenKind::LParen},        {")", TokenKind::RParen},
      {"[", TokenKind::LBracket},      {"]", TokenKind::RBracket},
      {",", TokenKind::Comma},         {";", TokenKind::Semicolon},
      {":", TokenKind::Colon},         {"?", TokenKind::Question},
      {"=", TokenKind::Assign},        {"+", TokenKind::Plus},
      {"-", TokenKind::Minus},         {"*", TokenKind::Star},
      {"/", TokenKind::Slash},         {"//", TokenKind::SlashSlash},
      {"%", TokenKind::Percent},       {"<", TokenKind::Less},
      {"<=", TokenKind::LessEqual},    {">", TokenKind::Greater},
      {">=", TokenKind::GreaterEqual}, {"==", TokenKind::EqualEqual},
      {"!=", TokenKind::NotEqual},     {"&&", TokenKind::AndAnd},
      {"||", TokenKind::OrOr},         {"!", TokenKind::Bang},
  };
  for (const Case &c : cases) {
    Lexed token = single(c.text);
    EXPECT_EQ(token.kind, c.kind) << c.text;
    EXPECT_EQ(token.text, c.text);
  }
}

TEST(Lexer, TwoCharacterOperatorsAreGreedy) {
  EXPECT_EQ(kindsOf("///"),
            (std::vector<TokenKind>{TokenKind::SlashSlash, TokenKind::Slash,
                                    TokenKind::EndOfFile}));
  EXPECT_EQ(kindsOf("===!"),
            (std::vector<TokenKind>{TokenKind::EqualEqual, TokenKind::Assign,
                                    TokenKind::Bang, TokenKind::EndOfFile}));
  EXPECT_EQ(kindsOf("<==>"),
            (std::vector<TokenKind>{TokenKind::LessEqual, TokenKind::Assign,
                                    TokenKind::Greater,
                                    TokenKind::EndOfFile}));
  EXPECT_EQ(kindsOf("!!="),
            (std::vector<TokenKind>{TokenKind::Bang, TokenKind::NotEqual,
                                    TokenKind::EndOfFile}));
  EXPECT_EQ(kindsOf("&&&&||"),
            (std::vector<TokenKind>{TokenKind::AndAnd, TokenKind::AndAnd,
                                    TokenKind::OrOr, TokenKind::EndOfFile}));
}

TEST(Lexer, SpacedOperatorsAreSeparateTokens) {
  EXPECT_EQ(kindsOf("/ / < = ! ="),
            (std::vector<TokenKind>{TokenKind::Slash, TokenKind::Slash,
                                    TokenKind::Less, TokenKind::Assign,
                                    TokenKind::Bang, TokenKind::Assign,
                                    TokenKind::EndOfFile}));
}

TEST(Lexer, StrayCharacterIsAnErrorToken) {
  for (char c : {'@', '$', '`', '~', '^', '\\', '"', '\''}) {
    std::string text(1, c);
    Lexed token = lexAll(text).front();
    EXPECT_EQ(token.kind, TokenKind::Error) << text;
    EXPECT_EQ(token.text, "unexpected character '" + text + "'");
  }
}

TEST(Lexer, SingleAmpersandOrBarSuggestsTheDoubledOperator) {
  Lexed amp = lexAll("a & b")[1];
  EXPECT_EQ(amp.kind, TokenKind::Error);
  EXPECT_EQ(amp.text, "unexpected character '&'; did you mean '&&'?");
  EXPECT_EQ(amp.column, 3u);
  Lexed bar = lexAll("|")[0];
  EXPECT_EQ(bar.kind, TokenKind::Error);
  EXPECT_EQ(bar.text, "unexpected character '|'; did you mean '||'?");
}

TEST(Lexer, UnprintableByteIsReportedInHex) {
  Lexed control = lexAll(llvm::StringRef("\x01", 1)).front();
  EXPECT_EQ(control.kind, TokenKind::Error);
  EXPECT_EQ(control.text, "unexpected byte 0x1");
  Lexed high = lexAll("\xC3\xA9").front();
  EXPECT_EQ(high.kind, TokenKind::Error);
  EXPECT_EQ(high.text, "unexpected byte 0xC3");
  Lexed nul = lexAll(llvm::StringRef("\0", 1)).front();
  EXPECT_EQ(nul.kind, TokenKind::Error);
  EXPECT_EQ(nul.text, "unexpected byte 0x0");
}

TEST(Lexer, LexingContinuesAfterAnError) {
  std::vector<Lexed> tokens = lexAll("a @ b");
  ASSERT_EQ(tokens.size(), 4u);
  EXPECT_EQ(tokens[0].kind, TokenKind::Identifier);
  EXPECT_EQ(tokens[1].kind, TokenKind::Error);
  EXPECT_EQ(tokens[2].kind, TokenKind::Identifier);
  EXPECT_EQ(tokens[2].text, "b");
  EXPECT_EQ(tokens[2].column, 5u);
}

TEST(Lexer, StatementTokenSequence) {
  std::vector<Lexed> tokens =
      lexAll("capture bias: f32[?, 8];\nmask = kv_idx <= q_idx;");
  std::vector<TokenKind> expected = {
      TokenKind::Identifier, TokenKind::Identifier, TokenKind::Colon,
      TokenKind::Identifier, TokenKind::LBracket,   TokenKind::Question,
      TokenKind::Comma,      TokenKind::Integer,    TokenKind::RBracket,
      TokenKind::Semicolon,  TokenKind::Identifier, TokenKind::Assign,
      TokenKind::Identifier, TokenKind::LessEqual,  TokenKind::Identifier,
      TokenKind::Semicolon,  TokenKind::EndOfFile};
  ASSERT_EQ(tokens.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(tokens[i].kind, expected[i]) << "token " << i;
  EXPECT_EQ(tokens[13].line, 2u);
  EXPECT_EQ(tokens[13].column, 15u);
}

TEST(Lexer, SpellingOfNamesEveryKind) {
  EXPECT_EQ(rbfc::spellingOf(TokenKind::EndOfFile), "end of file");
  EXPECT_EQ(rbfc::spellingOf(TokenKind::Identifier), "identifier");
  EXPECT_EQ(rbfc::spellingOf(TokenKind::Float), "number");
  EXPECT_EQ(rbfc::spellingOf(TokenKind::SlashSlash), "'//'");
  EXPECT_EQ(rbfc::spellingOf(TokenKind::AndAnd), "'&&'");
  EXPECT_EQ(rbfc::spellingOf(TokenKind::OrOr), "'||'");
  EXPECT_EQ(rbfc::spellingOf(TokenKind::NotEqual), "'!='");
  // No kind falls through to the generic fallback.
  for (int kind = static_cast<int>(TokenKind::EndOfFile);
       kind <= static_cast<int>(TokenKind::Bang); ++kind)
    EXPECT_NE(rbfc::spellingOf(static_cast<TokenKind>(kind)), "token")
        << kind;
}

} // namespace
