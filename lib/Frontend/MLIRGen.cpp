//===- MLIRGen.cpp - from an .attn spec to the attn dialect ---------------===//
//
// Type-checks the AST and emits one func.func around attn.attention. Every
// diagnostic points into the spec through a FileLineColLoc, so the driver's
// SourceMgr handler prints the line and a caret under the culprit.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Frontend/MLIRGen.h"
#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Frontend/Parser.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringMap.h"

#include <cmath>
#include <limits>

using namespace mlir;
using namespace rbfc;
using namespace rbfc::ast;

void rbfc::loadFrontendDialects(MLIRContext &context) {
  context.loadDialect<attn::AttnDialect, func::FuncDialect,
                      arith::ArithDialect, math::MathDialect>();
}

namespace {

enum class ValueKind { Int, Float, Bool };

llvm::StringRef kindName(ValueKind kind) {
  switch (kind) {
  case ValueKind::Int: return "int";
  case ValueKind::Float: return "float";
  case ValueKind::Bool: return "bool";
  }
  return "?";
}

/// "an int", "a float", "a bool".
std::string withArticle(ValueKind kind) {
  return ((kind == ValueKind::Int ? "an " : "a ") + kindName(kind)).str();
}

/// The type of an expression and whether it reads q or k.
struct Checked {
  ValueKind kind;
  bool readsVectors;
};

enum class SymbolKind { Index, Size, Vector, Param, Capture, Let, Infinity };

struct Symbol {
  SymbolKind kind;
  unsigned number; // which index, size, param, capture or let
  SourceLoc loc;
};

enum class Function {
  Dot, Norm2, Dist2, Select, Min, Max, Abs, Float,
  Exp, Exp2, Log, Log2, Tanh, Sqrt, Rsqrt, Floor, Ceil,
};

struct FunctionInfo {
  llvm::StringRef name;
  Function function;
  unsigned arity;
};

constexpr FunctionInfo kFunctions[] = {
    {"dot", Function::Dot, 2},       {"norm2", Function::Norm2, 1},
    {"dist2", Function::Dist2, 2},   {"select", Function::Select, 3},
    {"min", Function::Min, 2},       {"max", Function::Max, 2},
    {"abs", Function::Abs, 1},       {"float", Function::Float, 1},
    {"exp", Function::Exp, 1},       {"exp2", Function::Exp2, 1},
    {"log", Function::Log, 1},       {"log2", Function::Log2, 1},
    {"tanh", Function::Tanh, 1},     {"sqrt", Function::Sqrt, 1},
    {"rsqrt", Function::Rsqrt, 1},   {"floor", Function::Floor, 1},
    {"ceil", Function::Ceil, 1},
};

const FunctionInfo *lookupFunction(llvm::StringRef name) {
  for (const FunctionInfo &info : kFunctions)
    if (info.name == name)
      return &info;
  return nullptr;
}

constexpr llvm::StringLiteral kIndexNames[] = {"b", "h", "q_idx", "kv_idx"};
constexpr std::pair<llvm::StringLiteral, attn::Size> kSizeNames[] = {
    {"batch", attn::Size::batch},   {"heads", attn::Size::heads},
    {"kv_heads", attn::Size::kv_heads}, {"q_len", attn::Size::q_len},
    {"kv_len", attn::Size::kv_len}, {"head_dim", attn::Size::head_dim},
};
constexpr llvm::StringLiteral kKeywords[] = {
    "attention", "param", "capture", "let", "score", "mask", "normalize",
    "true", "false", "softmax", "none"};

/// Where emitted values go: one block of an attn.attention region, plus the
/// lets already emitted into it.
struct RegionScope {
  OpBuilder builder;
  Block *block;
  llvm::StringMap<Value> lets;
};

class MLIRGen {
public:
  MLIRGen(MLIRContext &context, llvm::StringRef filename,
          const FrontendOptions &options)
      : context(context), builder(&context),
        filename(StringAttr::get(&context, filename)), options(options) {}

  OwningOpRef<ModuleOp> build(const Spec &spec);

private:
  Location loc(SourceLoc at) {
    return FileLineColLoc::get(filename, at.line, at.column);
  }
  InFlightDiagnostic error(SourceLoc at, const llvm::Twine &message) {
    return emitError(loc(at), message);
  }

  bool declareBuiltins();
  bool declare(llvm::StringRef name, Symbol symbol);
  void reportUnknownName(const Expr &expr);

  std::optional<Checked> check(const Expr &expr);
  std::optional<Checked> checkCall(const Expr &expr);
  std::optional<Checked> checkSubscript(const Expr &expr);
  std::optional<Checked> checkUnary(const Expr &expr);
  std::optional<Checked> checkBinary(const Expr &expr);
  std::optional<ValueKind> unify(SourceLoc at, llvm::StringRef what,
                                 ValueKind lhs, ValueKind rhs);
  bool expectNumber(const Expr &operand, const Checked &checked,
                    const llvm::Twine &what);
  std::optional<attn::Vector> vectorArgument(const Expr &operand);

  std::optional<std::pair<double, bool>> evaluateConstant(const Expr &expr,
                                                          llvm::StringRef param);
  Attribute defaultAttribute(const ParamDecl &param);

  Value emit(const Expr &expr, RegionScope &scope);
  Value emitCall(const Expr &expr, RegionScope &scope);
  Value emitBinary(const Expr &expr, RegionScope &scope);
  Value emitName(const Expr &expr, RegionScope &scope);
  Value toFloat(Value value, Location at, OpBuilder &b);
  Value emitFloorDivision(Value lhs, Value rhs, bool remainder, Location at,
                          OpBuilder &b);
  void emitRegion(attn::AttentionOp op, Region &region, const Expr &expr,
                  bool isMask);

  MLIRContext &context;
  OpBuilder builder;
  StringAttr filename;
  const FrontendOptions &options;
  const Spec *spec = nullptr;
  /// The let whose value is being checked, to name a self-reference.
  const LetDecl *currentLet = nullptr;
  llvm::StringMap<Symbol> symbols;
  llvm::DenseMap<const Expr *, Checked> checked;
};

} // namespace

bool MLIRGen::declare(llvm::StringRef name, Symbol symbol) {
  for (llvm::StringRef keyword : kKeywords)
    if (name == keyword) {
      error(symbol.loc, "'" + name + "' is a keyword and cannot be defined");
      return false;
    }
  if (lookupFunction(name)) {
    error(symbol.loc,
          "'" + name + "' is a builtin function and cannot be redefined");
    return false;
  }
  auto [it, inserted] = symbols.try_emplace(name, symbol);
  if (inserted)
    return true;
  if (it->second.kind == SymbolKind::Param ||
      it->second.kind == SymbolKind::Capture ||
      it->second.kind == SymbolKind::Let)
    error(symbol.loc, "'" + name + "' is already defined")
            .attachNote(loc(it->second.loc))
        << "previous definition of '" << name << "' is here";
  else
    error(symbol.loc, "'" + name + "' is a builtin name and cannot be "
                      "redefined");
  return false;
}

bool MLIRGen::declareBuiltins() {
  for (auto [number, name] : llvm::enumerate(kIndexNames))
    symbols[name] = {SymbolKind::Index, static_cast<unsigned>(number), {}};
  for (auto [number, entry] : llvm::enumerate(kSizeNames))
    symbols[entry.first] = {SymbolKind::Size,
                            static_cast<unsigned>(entry.second), {}};
  symbols["q"] = {SymbolKind::Vector, static_cast<unsigned>(attn::Vector::q),
                  {}};
  symbols["k"] = {SymbolKind::Vector, static_cast<unsigned>(attn::Vector::k),
                  {}};
  symbols["inf"] = {SymbolKind::Infinity, 0, {}};
  return true;
}

void MLIRGen::reportUnknownName(const Expr &expr) {
  for (const LetDecl &let : spec->lets)
    if (let.name == expr.name) {
      if (&let == currentLet) {
        error(expr.loc, "'" + expr.name + "' is used in its own definition");
        return;
      }
      error(expr.loc, "'" + expr.name + "' is used before its definition")
              .attachNote(loc(let.loc))
          << "'" << expr.name << "' is defined here";
      return;
    }
  InFlightDiagnostic diag = error(expr.loc, "unknown name '" + expr.name + "'");
  llvm::StringRef best;
  unsigned bestDistance = 3;
  for (const auto &entry : symbols) {
    unsigned distance = llvm::StringRef(expr.name).edit_distance(entry.first());
    if (distance < bestDistance) {
      bestDistance = distance;
      best = entry.first();
    }
  }
  if (!best.empty())
    diag << "; did you mean '" << best << "'?";
}

bool MLIRGen::expectNumber(const Expr &operand, const Checked &result,
                           const llvm::Twine &what) {
  if (result.kind != ValueKind::Bool)
    return true;
  error(operand.loc, what + " needs a number, got bool");
  return false;
}

std::optional<ValueKind> MLIRGen::unify(SourceLoc at, llvm::StringRef what,
                                        ValueKind lhs, ValueKind rhs) {
  if (lhs == rhs)
    return lhs;
  if (lhs != ValueKind::Bool && rhs != ValueKind::Bool)
    return ValueKind::Float;
  error(at, "the two arms of " + what + " have different types (" +
                kindName(lhs) + " and " + kindName(rhs) + ")");
  return std::nullopt;
}

std::optional<Checked> MLIRGen::check(const Expr &expr) {
  auto it = checked.find(&expr);
  if (it != checked.end())
    return it->second;
  std::optional<Checked> result;
  switch (expr.kind) {
  case Expr::Kind::Number:
    result = Checked{expr.isInteger ? ValueKind::Int : ValueKind::Float, false};
    break;
  case Expr::Kind::Boolean:
    result = Checked{ValueKind::Bool, false};
    break;
  case Expr::Kind::Name: {
    auto symbol = symbols.find(expr.name);
    if (symbol == symbols.end()) {
      reportUnknownName(expr);
      return std::nullopt;
    }
    switch (symbol->second.kind) {
    case SymbolKind::Index:
    case SymbolKind::Size:
      result = Checked{ValueKind::Int, false};
      break;
    case SymbolKind::Infinity:
      result = Checked{ValueKind::Float, false};
      break;
    case SymbolKind::Vector:
      error(expr.loc, "'" + expr.name +
                          "' is a vector; use it inside dot(), norm2() or "
                          "dist2()");
      return std::nullopt;
    case SymbolKind::Param:
      result = Checked{spec->params[symbol->second.number].type ==
                               ScalarKind::Int
                           ? ValueKind::Int
                           : ValueKind::Float,
                       false};
      break;
    case SymbolKind::Capture:
      error(expr.loc, "captured tensor '" + expr.name +
                          "' must be indexed, e.g. " + expr.name + "[h]");
      return std::nullopt;
    case SymbolKind::Let:
      result = check(*spec->lets[symbol->second.number].value);
      if (!result)
        return std::nullopt;
      break;
    }
    break;
  }
  case Expr::Kind::Call:
    result = checkCall(expr);
    break;
  case Expr::Kind::Subscript:
    result = checkSubscript(expr);
    break;
  case Expr::Kind::Unary:
    result = checkUnary(expr);
    break;
  case Expr::Kind::Binary:
    result = checkBinary(expr);
    break;
  case Expr::Kind::Conditional: {
    std::optional<Checked> condition = check(*expr.operands[0]);
    std::optional<Checked> whenTrue = check(*expr.operands[1]);
    std::optional<Checked> whenFalse = check(*expr.operands[2]);
    if (!condition || !whenTrue || !whenFalse)
      return std::nullopt;
    if (condition->kind != ValueKind::Bool) {
      error(expr.operands[0]->loc, "the condition of '?:' must be a bool, got " +
                                       kindName(condition->kind));
      return std::nullopt;
    }
    std::optional<ValueKind> kind =
        unify(expr.loc, "'?:'", whenTrue->kind, whenFalse->kind);
    if (!kind)
      return std::nullopt;
    result = Checked{*kind, condition->readsVectors ||
                                whenTrue->readsVectors ||
                                whenFalse->readsVectors};
    break;
  }
  }
  if (result)
    checked[&expr] = *result;
  return result;
}

std::optional<attn::Vector> MLIRGen::vectorArgument(const Expr &operand) {
  if (operand.kind == Expr::Kind::Name) {
    auto symbol = symbols.find(operand.name);
    if (symbol != symbols.end() && symbol->second.kind == SymbolKind::Vector)
      return static_cast<attn::Vector>(symbol->second.number);
  }
  return std::nullopt;
}

std::optional<Checked> MLIRGen::checkCall(const Expr &expr) {
  const FunctionInfo *info = lookupFunction(expr.name);
  if (!info) {
    auto symbol = symbols.find(expr.name);
    if (symbol != symbols.end() && symbol->second.kind == SymbolKind::Capture)
      error(expr.loc, "'" + expr.name +
                          "' is a captured tensor; index it with [...], not "
                          "(...)");
    else
      error(expr.loc, "unknown function '" + expr.name +
                          "' (builtins: dot, norm2, dist2, select, min, max, "
                          "abs, float, exp, exp2, log, log2, tanh, sqrt, "
                          "rsqrt, floor, ceil)");
    return std::nullopt;
  }
  if (expr.operands.size() != info->arity) {
    error(expr.loc, "'" + expr.name + "' takes " + llvm::Twine(info->arity) +
                        (info->arity == 1 ? " argument" : " arguments") +
                        ", got " + llvm::Twine(expr.operands.size()));
    return std::nullopt;
  }

  switch (info->function) {
  case Function::Dot:
  case Function::Dist2: {
    std::optional<attn::Vector> lhs = vectorArgument(*expr.operands[0]);
    std::optional<attn::Vector> rhs = vectorArgument(*expr.operands[1]);
    if (!lhs || !rhs || *lhs == *rhs) {
      error(expr.loc, "'" + expr.name + "' takes q and k, as in " + expr.name +
                          "(q, k)");
      return std::nullopt;
    }
    return Checked{ValueKind::Float, true};
  }
  case Function::Norm2:
    if (!vectorArgument(*expr.operands[0])) {
      error(expr.operands[0]->loc,
            "'norm2' takes q or k, as in norm2(k)");
      return std::nullopt;
    }
    return Checked{ValueKind::Float, true};
  default:
    break;
  }

  SmallVector<Checked> arguments;
  bool readsVectors = false;
  for (const ExprPtr &operand : expr.operands) {
    std::optional<Checked> argument = check(*operand);
    if (!argument)
      return std::nullopt;
    arguments.push_back(*argument);
    readsVectors |= argument->readsVectors;
  }
  auto numberArguments = [&](llvm::ArrayRef<unsigned> positions) {
    for (unsigned position : positions)
      if (!expectNumber(*expr.operands[position], arguments[position],
                        "'" + expr.name + "'"))
        return false;
    return true;
  };

  switch (info->function) {
  case Function::Select: {
    if (arguments[0].kind != ValueKind::Bool) {
      error(expr.operands[0]->loc,
            "the first argument of 'select' must be a bool, got " +
                kindName(arguments[0].kind));
      return std::nullopt;
    }
    std::optional<ValueKind> kind =
        unify(expr.loc, "'select'", arguments[1].kind, arguments[2].kind);
    if (!kind)
      return std::nullopt;
    return Checked{*kind, readsVectors};
  }
  case Function::Min:
  case Function::Max:
    if (!numberArguments({0, 1}))
      return std::nullopt;
    return Checked{arguments[0].kind == ValueKind::Int &&
                           arguments[1].kind == ValueKind::Int
                       ? ValueKind::Int
                       : ValueKind::Float,
                   readsVectors};
  case Function::Abs:
    if (!numberArguments({0}))
      return std::nullopt;
    return Checked{arguments[0].kind, readsVectors};
  default:
    if (!numberArguments({0}))
      return std::nullopt;
    return Checked{ValueKind::Float, readsVectors};
  }
}

std::optional<Checked> MLIRGen::checkSubscript(const Expr &expr) {
  auto symbol = symbols.find(expr.name);
  if (symbol == symbols.end()) {
    reportUnknownName(expr);
    return std::nullopt;
  }
  if (symbol->second.kind != SymbolKind::Capture) {
    error(expr.loc, "'" + expr.name +
                        "' is not a captured tensor and cannot be indexed");
    return std::nullopt;
  }
  const CaptureDecl &capture = spec->captures[symbol->second.number];
  if (expr.operands.size() != capture.dims.size()) {
    error(expr.loc, "'" + expr.name + "' has " +
                        llvm::Twine(capture.dims.size()) +
                        (capture.dims.size() == 1 ? " dimension" : " dimensions") +
                        " but is indexed with " +
                        llvm::Twine(expr.operands.size()) +
                        (expr.operands.size() == 1 ? " index" : " indices"));
    return std::nullopt;
  }
  bool readsVectors = false;
  for (auto [position, operand] : llvm::enumerate(expr.operands)) {
    std::optional<Checked> index = check(*operand);
    if (!index)
      return std::nullopt;
    if (index->kind != ValueKind::Int) {
      error(operand->loc, "index " + llvm::Twine(position + 1) + " of '" +
                              expr.name + "' must be an int, got " +
                              kindName(index->kind));
      return std::nullopt;
    }
    readsVectors |= index->readsVectors;
  }
  return Checked{capture.element == CaptureElement::F32 ? ValueKind::Float
                                                        : ValueKind::Int,
                 readsVectors};
}

std::optional<Checked> MLIRGen::checkUnary(const Expr &expr) {
  std::optional<Checked> operand = check(*expr.operands[0]);
  if (!operand)
    return std::nullopt;
  if (expr.op == TokenKind::Bang) {
    if (operand->kind != ValueKind::Bool) {
      error(expr.loc, "'!' needs a bool, got " + kindName(operand->kind));
      return std::nullopt;
    }
    return operand;
  }
  if (!expectNumber(*expr.operands[0], *operand, "unary '-'"))
    return std::nullopt;
  return operand;
}

std::optional<Checked> MLIRGen::checkBinary(const Expr &expr) {
  std::optional<Checked> lhs = check(*expr.operands[0]);
  std::optional<Checked> rhs = check(*expr.operands[1]);
  if (!lhs || !rhs)
    return std::nullopt;
  bool readsVectors = lhs->readsVectors || rhs->readsVectors;
  std::string what = ("operator " + spellingOf(expr.op)).str();
  bool bothInt = lhs->kind == ValueKind::Int && rhs->kind == ValueKind::Int;
  switch (expr.op) {
  case TokenKind::AndAnd:
  case TokenKind::OrOr:
    for (const auto &[operand, result] :
         {std::pair(expr.operands[0].get(), *lhs),
          std::pair(expr.operands[1].get(), *rhs)})
      if (result.kind != ValueKind::Bool) {
        error(operand->loc, what + " needs bools, got " +
                                kindName(result.kind));
        return std::nullopt;
      }
    return Checked{ValueKind::Bool, readsVectors};
  case TokenKind::EqualEqual:
  case TokenKind::NotEqual:
    if ((lhs->kind == ValueKind::Bool) != (rhs->kind == ValueKind::Bool)) {
      error(expr.loc, what + " compares " + withArticle(lhs->kind) +
                          " with " + withArticle(rhs->kind));
      return std::nullopt;
    }
    return Checked{ValueKind::Bool, readsVectors};
  case TokenKind::Less:
  case TokenKind::LessEqual:
  case TokenKind::Greater:
  case TokenKind::GreaterEqual:
    if (!expectNumber(*expr.operands[0], *lhs, what) ||
        !expectNumber(*expr.operands[1], *rhs, what))
      return std::nullopt;
    return Checked{ValueKind::Bool, readsVectors};
  case TokenKind::Percent:
    if (!bothInt) {
      error(expr.loc, "operator '%' needs ints, got " + kindName(lhs->kind) +
                          " and " + kindName(rhs->kind));
      return std::nullopt;
    }
    return Checked{ValueKind::Int, readsVectors};
  default:
    if (!expectNumber(*expr.operands[0], *lhs, what) ||
        !expectNumber(*expr.operands[1], *rhs, what))
      return std::nullopt;
    // '/' is true division, as in Python; '//' floors.
    return Checked{bothInt && expr.op != TokenKind::Slash ? ValueKind::Int
                                                          : ValueKind::Float,
                   readsVectors};
  }
}

//===----------------------------------------------------------------------===//
// Parameter defaults
//===----------------------------------------------------------------------===//

std::optional<std::pair<double, bool>>
MLIRGen::evaluateConstant(const Expr &expr, llvm::StringRef param) {
  auto notConstant = [&](const Expr &culprit) {
    error(culprit.loc, "the default of parameter '" + param +
                           "' must be a constant expression (numbers, "
                           "head_dim, arithmetic and math functions)");
    return std::nullopt;
  };
  switch (expr.kind) {
  case Expr::Kind::Number:
    return std::pair(expr.value, expr.isInteger);
  case Expr::Kind::Name:
    if (expr.name == "head_dim")
      return std::pair(static_cast<double>(options.headDim), true);
    if (expr.name == "inf")
      return std::pair(std::numeric_limits<double>::infinity(), false);
    return notConstant(expr);
  case Expr::Kind::Unary: {
    if (expr.op != TokenKind::Minus)
      return notConstant(expr);
    auto operand = evaluateConstant(*expr.operands[0], param);
    if (!operand)
      return std::nullopt;
    return std::pair(-operand->first, operand->second);
  }
  case Expr::Kind::Binary: {
    auto lhs = evaluateConstant(*expr.operands[0], param);
    if (!lhs)
      return std::nullopt;
    auto rhs = evaluateConstant(*expr.operands[1], param);
    if (!rhs)
      return std::nullopt;
    bool bothInt = lhs->second && rhs->second;
    switch (expr.op) {
    case TokenKind::Plus: return std::pair(lhs->first + rhs->first, bothInt);
    case TokenKind::Minus: return std::pair(lhs->first - rhs->first, bothInt);
    case TokenKind::Star: return std::pair(lhs->first * rhs->first, bothInt);
    case TokenKind::Slash: return std::pair(lhs->first / rhs->first, false);
    case TokenKind::SlashSlash:
      if (rhs->first == 0) {
        error(expr.loc, "division by zero in the default of '" + param + "'");
        return std::nullopt;
      }
      return std::pair(std::floor(lhs->first / rhs->first), bothInt);
    case TokenKind::Percent:
      if (!bothInt) {
        error(expr.loc, llvm::Twine("operator '%' needs ints, got ") +
                            (lhs->second ? "int" : "float") + " and " +
                            (rhs->second ? "int" : "float"));
        return std::nullopt;
      }
      if (rhs->first == 0) {
        error(expr.loc, "division by zero in the default of '" + param + "'");
        return std::nullopt;
      }
      return std::pair(lhs->first -
                           std::floor(lhs->first / rhs->first) * rhs->first,
                       true);
    default:
      return notConstant(expr);
    }
  }
  case Expr::Kind::Call: {
    const FunctionInfo *info = lookupFunction(expr.name);
    if (!info || expr.operands.size() != info->arity ||
        info->function == Function::Dot || info->function == Function::Norm2 ||
        info->function == Function::Dist2 ||
        info->function == Function::Select)
      return notConstant(expr);
    SmallVector<std::pair<double, bool>> arguments;
    for (const ExprPtr &operand : expr.operands) {
      auto argument = evaluateConstant(*operand, param);
      if (!argument)
        return std::nullopt;
      arguments.push_back(*argument);
    }
    double x = arguments[0].first;
    switch (info->function) {
    case Function::Min:
      return std::pair(std::min(x, arguments[1].first),
                       arguments[0].second && arguments[1].second);
    case Function::Max:
      return std::pair(std::max(x, arguments[1].first),
                       arguments[0].second && arguments[1].second);
    case Function::Abs: return std::pair(std::fabs(x), arguments[0].second);
    case Function::Float: return std::pair(x, false);
    case Function::Exp: return std::pair(std::exp(x), false);
    case Function::Exp2: return std::pair(std::exp2(x), false);
    case Function::Log: return std::pair(std::log(x), false);
    case Function::Log2: return std::pair(std::log2(x), false);
    case Function::Tanh: return std::pair(std::tanh(x), false);
    case Function::Sqrt: return std::pair(std::sqrt(x), false);
    case Function::Rsqrt: return std::pair(1.0 / std::sqrt(x), false);
    case Function::Floor: return std::pair(std::floor(x), false);
    case Function::Ceil: return std::pair(std::ceil(x), false);
    default: return notConstant(expr);
    }
  }
  default:
    return notConstant(expr);
  }
}

Attribute MLIRGen::defaultAttribute(const ParamDecl &param) {
  if (!param.defaultValue)
    return builder.getUnitAttr();
  auto value = evaluateConstant(*param.defaultValue, param.name);
  if (!value)
    return nullptr;
  if (param.type == ScalarKind::Float)
    return builder.getF32FloatAttr(static_cast<float>(value->first));
  if (!value->second) {
    error(param.defaultValue->loc, "the default of int parameter '" +
                                       param.name + "' must be an integer");
    return nullptr;
  }
  // Also rejects NaN (inf - inf of huge integers), whose conversion to
  // int32 is undefined.
  if (!(value->first >= std::numeric_limits<int32_t>::min() &&
        value->first <= std::numeric_limits<int32_t>::max())) {
    error(param.defaultValue->loc,
          "the default of int parameter '" + param.name +
              "' does not fit in 32 bits");
    return nullptr;
  }
  return builder.getI32IntegerAttr(static_cast<int32_t>(value->first));
}

//===----------------------------------------------------------------------===//
// Emission
//===----------------------------------------------------------------------===//

Value MLIRGen::toFloat(Value value, Location at, OpBuilder &b) {
  if (value.getType().isF32())
    return value;
  Value wide = arith::IndexCastOp::create(b, at, b.getI64Type(), value);
  return arith::SIToFPOp::create(b, at, b.getF32Type(), wide);
}

/// Floor division and its remainder on indices; a zero divisor gives 0
/// instead of undefined behaviour in the kernel.
Value MLIRGen::emitFloorDivision(Value lhs, Value rhs, bool remainder,
                                 Location at, OpBuilder &b) {
  Value zero = arith::ConstantIndexOp::create(b, at, 0);
  Value one = arith::ConstantIndexOp::create(b, at, 1);
  Value isZero =
      arith::CmpIOp::create(b, at, arith::CmpIPredicate::eq, rhs, zero);
  Value divisor = arith::SelectOp::create(b, at, isZero, one, rhs);
  Value quotient = arith::FloorDivSIOp::create(b, at, lhs, divisor);
  Value result = quotient;
  if (remainder) {
    Value product = arith::MulIOp::create(b, at, quotient, divisor);
    result = arith::SubIOp::create(b, at, lhs, product);
  }
  return arith::SelectOp::create(b, at, isZero, zero, result);
}

Value MLIRGen::emitName(const Expr &expr, RegionScope &scope) {
  OpBuilder &b = scope.builder;
  Location at = loc(expr.loc);
  const Symbol &symbol = symbols.find(expr.name)->second;
  switch (symbol.kind) {
  case SymbolKind::Index:
    return scope.block->getArgument(symbol.number);
  case SymbolKind::Size:
    return attn::SizeOp::create(b, at, static_cast<attn::Size>(symbol.number));
  case SymbolKind::Infinity:
    return arith::ConstantOp::create(
        b, at, b.getF32FloatAttr(std::numeric_limits<float>::infinity()));
  case SymbolKind::Param: {
    Value param = scope.block->getArgument(
        attn::AttentionOp::kNumIndexArgs + symbol.number);
    if (param.getType().isInteger(32))
      return arith::IndexCastOp::create(b, at, b.getIndexType(), param);
    return param;
  }
  case SymbolKind::Let: {
    auto it = scope.lets.find(expr.name);
    if (it != scope.lets.end())
      return it->second;
    Value value = emit(*spec->lets[symbol.number].value, scope);
    scope.lets[expr.name] = value;
    return value;
  }
  case SymbolKind::Vector:
  case SymbolKind::Capture:
    break;
  }
  llvm_unreachable("type checking rejects bare vectors and captures");
}

Value MLIRGen::emitCall(const Expr &expr, RegionScope &scope) {
  OpBuilder &b = scope.builder;
  Location at = loc(expr.loc);
  Function function = lookupFunction(expr.name)->function;
  switch (function) {
  case Function::Dot:
    return attn::DotOp::create(b, at, b.getF32Type());
  case Function::Dist2:
    return attn::Dist2Op::create(b, at, b.getF32Type());
  case Function::Norm2:
    return attn::Norm2Op::create(b, at, b.getF32Type(),
                                 *vectorArgument(*expr.operands[0]));
  default:
    break;
  }
  ValueKind kind = checked.lookup(&expr).kind;
  SmallVector<Value> arguments;
  for (const ExprPtr &operand : expr.operands) {
    Value argument = emit(*operand, scope);
    // Mixed int/float arithmetic promotes to float.
    if (kind == ValueKind::Float && function != Function::Select)
      argument = toFloat(argument, at, b);
    arguments.push_back(argument);
  }
  switch (function) {
  case Function::Select:
    if (kind == ValueKind::Float) {
      arguments[1] = toFloat(arguments[1], at, b);
      arguments[2] = toFloat(arguments[2], at, b);
    }
    return arith::SelectOp::create(b, at, arguments[0], arguments[1],
                                   arguments[2]);
  case Function::Min:
    if (kind == ValueKind::Int)
      return arith::MinSIOp::create(b, at, arguments[0], arguments[1]);
    return arith::MinimumFOp::create(b, at, arguments[0], arguments[1]);
  case Function::Max:
    if (kind == ValueKind::Int)
      return arith::MaxSIOp::create(b, at, arguments[0], arguments[1]);
    return arith::MaximumFOp::create(b, at, arguments[0], arguments[1]);
  case Function::Abs:
    if (kind == ValueKind::Int)
      return math::AbsIOp::create(b, at, arguments[0]);
    return math::AbsFOp::create(b, at, arguments[0]);
  case Function::Float:
    return arguments[0];
  case Function::Exp: return math::ExpOp::create(b, at, arguments[0]);
  case Function::Exp2: return math::Exp2Op::create(b, at, arguments[0]);
  case Function::Log: return math::LogOp::create(b, at, arguments[0]);
  case Function::Log2: return math::Log2Op::create(b, at, arguments[0]);
  case Function::Tanh: return math::TanhOp::create(b, at, arguments[0]);
  case Function::Sqrt: return math::SqrtOp::create(b, at, arguments[0]);
  case Function::Rsqrt: return math::RsqrtOp::create(b, at, arguments[0]);
  case Function::Floor: return math::FloorOp::create(b, at, arguments[0]);
  case Function::Ceil: return math::CeilOp::create(b, at, arguments[0]);
  default:
    llvm_unreachable("vector builtins are emitted above");
  }
}

static arith::CmpIPredicate intPredicate(TokenKind op) {
  switch (op) {
  case TokenKind::Less: return arith::CmpIPredicate::slt;
  case TokenKind::LessEqual: return arith::CmpIPredicate::sle;
  case TokenKind::Greater: return arith::CmpIPredicate::sgt;
  case TokenKind::GreaterEqual: return arith::CmpIPredicate::sge;
  case TokenKind::EqualEqual: return arith::CmpIPredicate::eq;
  default: return arith::CmpIPredicate::ne;
  }
}

static arith::CmpFPredicate floatPredicate(TokenKind op) {
  switch (op) {
  case TokenKind::Less: return arith::CmpFPredicate::OLT;
  case TokenKind::LessEqual: return arith::CmpFPredicate::OLE;
  case TokenKind::Greater: return arith::CmpFPredicate::OGT;
  case TokenKind::GreaterEqual: return arith::CmpFPredicate::OGE;
  case TokenKind::EqualEqual: return arith::CmpFPredicate::OEQ;
  default: return arith::CmpFPredicate::UNE;
  }
}

Value MLIRGen::emitBinary(const Expr &expr, RegionScope &scope) {
  OpBuilder &b = scope.builder;
  Location at = loc(expr.loc);
  Value lhs = emit(*expr.operands[0], scope);
  Value rhs = emit(*expr.operands[1], scope);
  ValueKind lhsKind = checked.lookup(expr.operands[0].get()).kind;
  ValueKind rhsKind = checked.lookup(expr.operands[1].get()).kind;
  bool bothInt = lhsKind == ValueKind::Int && rhsKind == ValueKind::Int;
  bool bothBool = lhsKind == ValueKind::Bool;

  switch (expr.op) {
  case TokenKind::AndAnd:
    return arith::AndIOp::create(b, at, lhs, rhs);
  case TokenKind::OrOr:
    return arith::OrIOp::create(b, at, lhs, rhs);
  case TokenKind::Less:
  case TokenKind::LessEqual:
  case TokenKind::Greater:
  case TokenKind::GreaterEqual:
  case TokenKind::EqualEqual:
  case TokenKind::NotEqual:
    if (bothInt || bothBool)
      return arith::CmpIOp::create(b, at, intPredicate(expr.op), lhs, rhs);
    return arith::CmpFOp::create(b, at, floatPredicate(expr.op),
                                 toFloat(lhs, at, b), toFloat(rhs, at, b));
  case TokenKind::SlashSlash:
  case TokenKind::Percent:
    if (bothInt)
      return emitFloorDivision(lhs, rhs, expr.op == TokenKind::Percent, at, b);
    return math::FloorOp::create(
        b, at,
        arith::DivFOp::create(b, at, toFloat(lhs, at, b), toFloat(rhs, at, b)));
  default:
    break;
  }
  if (bothInt && expr.op != TokenKind::Slash) {
    if (expr.op == TokenKind::Plus)
      return arith::AddIOp::create(b, at, lhs, rhs);
    if (expr.op == TokenKind::Minus)
      return arith::SubIOp::create(b, at, lhs, rhs);
    return arith::MulIOp::create(b, at, lhs, rhs);
  }
  lhs = toFloat(lhs, at, b);
  rhs = toFloat(rhs, at, b);
  switch (expr.op) {
  case TokenKind::Plus: return arith::AddFOp::create(b, at, lhs, rhs);
  case TokenKind::Minus: return arith::SubFOp::create(b, at, lhs, rhs);
  case TokenKind::Star: return arith::MulFOp::create(b, at, lhs, rhs);
  default: return arith::DivFOp::create(b, at, lhs, rhs);
  }
}

Value MLIRGen::emit(const Expr &expr, RegionScope &scope) {
  OpBuilder &b = scope.builder;
  Location at = loc(expr.loc);
  switch (expr.kind) {
  case Expr::Kind::Number:
    if (expr.isInteger)
      return arith::ConstantIndexOp::create(b, at,
                                            static_cast<int64_t>(expr.value));
    return arith::ConstantOp::create(
        b, at, b.getF32FloatAttr(static_cast<float>(expr.value)));
  case Expr::Kind::Boolean:
    return arith::ConstantOp::create(b, at, b.getBoolAttr(expr.boolean));
  case Expr::Kind::Name:
    return emitName(expr, scope);
  case Expr::Kind::Call:
    return emitCall(expr, scope);
  case Expr::Kind::Subscript: {
    const Symbol &symbol = symbols.find(expr.name)->second;
    SmallVector<Value> indices;
    for (const ExprPtr &operand : expr.operands)
      indices.push_back(emit(*operand, scope));
    Value capture = scope.block->getArgument(attn::AttentionOp::kNumIndexArgs +
                                             spec->params.size() +
                                             symbol.number);
    Value element = attn::LoadOp::create(b, at, capture, indices);
    if (element.getType().isF32())
      return element;
    return arith::IndexCastOp::create(b, at, b.getIndexType(), element);
  }
  case Expr::Kind::Unary: {
    Value operand = emit(*expr.operands[0], scope);
    if (expr.op == TokenKind::Bang) {
      Value one = arith::ConstantOp::create(b, at, b.getBoolAttr(true));
      return arith::XOrIOp::create(b, at, operand, one);
    }
    if (operand.getType().isF32())
      return arith::NegFOp::create(b, at, operand);
    Value zero = arith::ConstantIndexOp::create(b, at, 0);
    return arith::SubIOp::create(b, at, zero, operand);
  }
  case Expr::Kind::Binary:
    return emitBinary(expr, scope);
  case Expr::Kind::Conditional: {
    Value condition = emit(*expr.operands[0], scope);
    Value whenTrue = emit(*expr.operands[1], scope);
    Value whenFalse = emit(*expr.operands[2], scope);
    if (checked.lookup(&expr).kind == ValueKind::Float) {
      whenTrue = toFloat(whenTrue, at, b);
      whenFalse = toFloat(whenFalse, at, b);
    }
    return arith::SelectOp::create(b, at, condition, whenTrue, whenFalse);
  }
  }
  llvm_unreachable("unknown expression kind");
}

void MLIRGen::emitRegion(attn::AttentionOp op, Region &region,
                         const Expr &expr, bool isMask) {
  Block &block = op.createRegionBlock(region);
  RegionScope scope{OpBuilder::atBlockBegin(&block), &block, {}};
  Value result = emit(expr, scope);
  if (!isMask)
    result = toFloat(result, loc(expr.loc), scope.builder);
  attn::YieldOp::create(scope.builder, loc(expr.loc), result);
}

static Type elementTypeFor(MLIRContext &context, llvm::StringRef dtype) {
  if (dtype == "bf16")
    return BFloat16Type::get(&context);
  if (dtype == "f16")
    return Float16Type::get(&context);
  if (dtype == "f32")
    return Float32Type::get(&context);
  return nullptr;
}

OwningOpRef<ModuleOp> MLIRGen::build(const Spec &parsed) {
  spec = &parsed;
  Location specLoc = loc(parsed.loc);
  Type element = elementTypeFor(context, options.dtype);
  if (!element) {
    emitError(specLoc) << "unsupported dtype '" << options.dtype
                       << "' (expected bf16, f16 or f32)";
    return nullptr;
  }
  if (options.headDim < 1 || options.headDim > 1024) {
    emitError(specLoc) << "head_dim must be between 1 and 1024, got "
                       << options.headDim;
    return nullptr;
  }

  declareBuiltins();
  bool ok = true;
  for (auto [number, param] : llvm::enumerate(parsed.params))
    ok &= declare(param.name, {SymbolKind::Param,
                               static_cast<unsigned>(number), param.loc});
  for (auto [number, capture] : llvm::enumerate(parsed.captures))
    ok &= declare(capture.name, {SymbolKind::Capture,
                                 static_cast<unsigned>(number), capture.loc});
  if (!ok)
    return nullptr;

  SmallVector<Attribute> defaults;
  for (const ParamDecl &param : parsed.params) {
    Attribute fallback = defaultAttribute(param);
    if (!fallback)
      return nullptr;
    defaults.push_back(fallback);
  }
  // A let is visible from the statement after it: check the lets, the score
  // and the mask in source order, declaring each let once it is checked.
  auto precedes = [](SourceLoc lhs, SourceLoc rhs) {
    return lhs.line != rhs.line ? lhs.line < rhs.line
                                : lhs.column < rhs.column;
  };
  size_t numDeclared = 0;
  auto declareLetsBefore = [&](std::optional<SourceLoc> end) {
    for (; numDeclared < parsed.lets.size(); ++numDeclared) {
      const LetDecl &let = parsed.lets[numDeclared];
      if (end && !precedes(let.loc, *end))
        return true;
      currentLet = &let;
      bool checkedLet = check(*let.value).has_value();
      currentLet = nullptr;
      if (!checkedLet ||
          !declare(let.name, {SymbolKind::Let,
                              static_cast<unsigned>(numDeclared), let.loc}))
        return false;
    }
    return true;
  };
  auto checkScore = [&]() {
    std::optional<Checked> score = check(*parsed.score);
    if (!score)
      return false;
    if (score->kind == ValueKind::Bool) {
      error(parsed.score->loc, "the score must be a number, got bool (did "
                               "you mean to write it as the mask?)");
      return false;
    }
    return true;
  };
  auto checkMask = [&]() {
    std::optional<Checked> mask = check(*parsed.mask);
    if (!mask)
      return false;
    if (mask->kind != ValueKind::Bool) {
      error(parsed.mask->loc, "the mask must be a bool (e.g. kv_idx <= "
                              "q_idx), got " +
                                  kindName(mask->kind));
      return false;
    }
    if (mask->readsVectors) {
      error(parsed.mask->loc,
            "the mask may not depend on q or k: it decides which tiles to "
            "skip before any score is computed");
      return false;
    }
    return true;
  };
  SmallVector<std::pair<SourceLoc, bool>> statements; // (where, isMask)
  if (parsed.score)
    statements.push_back({parsed.scoreLoc, false});
  if (parsed.mask)
    statements.push_back({parsed.maskLoc, true});
  if (statements.size() == 2 &&
      precedes(statements[1].first, statements[0].first))
    std::swap(statements[0], statements[1]);
  for (auto [at, isMask] : statements)
    if (!declareLetsBefore(at) || !(isMask ? checkMask() : checkScore()))
      return nullptr;
  if (!declareLetsBefore(std::nullopt))
    return nullptr;
  if (!parsed.score) {
    emitError(specLoc) << "attention '" << parsed.name
                       << "' has no score; add a line such as "
                          "'score = dot(q, k) / sqrt(head_dim);'";
    return nullptr;
  }

  // Build func.func @name(q, k, v, params..., captures...) -> (o[, lse]).
  auto module = ModuleOp::create(specLoc);
  builder.setInsertionPointToEnd(module.getBody());
  auto qkvType = RankedTensorType::get(
      {ShapedType::kDynamic, ShapedType::kDynamic, ShapedType::kDynamic,
       options.headDim},
      element);
  SmallVector<Type> inputs(3, qkvType);
  for (const ParamDecl &param : parsed.params)
    inputs.push_back(param.type == ScalarKind::Float
                         ? builder.getF32Type()
                         : Type(builder.getI32Type()));
  SmallVector<Attribute> paramNames, captureNames;
  for (const ParamDecl &param : parsed.params)
    paramNames.push_back(builder.getStringAttr(param.name));
  for (const CaptureDecl &capture : parsed.captures) {
    captureNames.push_back(builder.getStringAttr(capture.name));
    SmallVector<int64_t> shape;
    for (int64_t dim : capture.dims)
      shape.push_back(dim < 0 ? ShapedType::kDynamic : dim);
    Type captureElement =
        capture.element == CaptureElement::F32 ? builder.getF32Type()
        : capture.element == CaptureElement::I32
            ? Type(builder.getI32Type())
            : Type(builder.getI64Type());
    inputs.push_back(RankedTensorType::get(shape, captureElement));
  }
  Type lseType = options.withLse
                     ? RankedTensorType::get({ShapedType::kDynamic,
                                              ShapedType::kDynamic,
                                              ShapedType::kDynamic},
                                             builder.getF32Type())
                     : Type();
  SmallVector<Type> results{qkvType};
  if (lseType)
    results.push_back(lseType);
  auto func = func::FuncOp::create(builder, specLoc, parsed.name,
                                   builder.getFunctionType(inputs, results));
  Block *entry = func.addEntryBlock();
  builder.setInsertionPointToEnd(entry);
  ValueRange arguments = entry->getArguments();
  unsigned numParams = parsed.params.size();
  auto op = attn::AttentionOp::create(
      builder, specLoc, qkvType, lseType, arguments[0], arguments[1],
      arguments[2], arguments.slice(3, numParams),
      arguments.drop_front(3 + numParams),
      parsed.normalization == Normalization::Softmax
          ? attn::Normalization::softmax
          : attn::Normalization::none,
      builder.getArrayAttr(paramNames), builder.getArrayAttr(defaults),
      builder.getArrayAttr(captureNames), /*plan=*/nullptr,
      /*small_plans=*/nullptr);
  emitRegion(op, op.getScore(), *parsed.score, /*isMask=*/false);
  if (parsed.mask)
    emitRegion(op, op.getMask(), *parsed.mask, /*isMask=*/true);
  func::ReturnOp::create(builder, specLoc, op->getResults());

  if (failed(verify(module)))
    return nullptr;
  return module;
}

OwningOpRef<ModuleOp> rbfc::buildAttnModule(MLIRContext &context,
                                            llvm::StringRef buffer,
                                            llvm::StringRef filename,
                                            const FrontendOptions &options) {
  loadFrontendDialects(context);
  StringAttr file = StringAttr::get(&context, filename);
  std::optional<InFlightDiagnostic> pending;
  DiagnosticCallback report = [&](SourceLoc at, const llvm::Twine &message,
                                  bool isNote) {
    Location location = FileLineColLoc::get(file, at.line, at.column);
    if (isNote && pending) {
      pending->attachNote(location) << message;
      return;
    }
    pending.reset();
    pending.emplace(emitError(location, message));
  };
  std::optional<Spec> spec = parseSpec(buffer, report);
  pending.reset();
  if (!spec)
    return nullptr;
  return MLIRGen(context, filename, options).build(*spec);
}
